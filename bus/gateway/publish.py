"""The checks on an event a partner publishes through the gateway (pure logic): the bus's own
validation and signature checks, and that the event is the caller's own organisation's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bus.gateway.models import FieldProblem
from bus.policy.data import Partner
from bus.provenance.registry import SignerRegistry
from bus.provenance.verify import SourceRejected, verify_source
from bus.topics import ingress_topic
from schemas.envelope import Agency
from schemas.registry import InvalidEvent, parse_event

#: signature problems that say "not you", not "malformed"
_FORBIDDEN = {"unknown_signing_key", "signer_not_source", "bad_signature", "source_topic_mismatch"}


@dataclass(frozen=True)
class Accepted:
    event_id: str
    topic: str
    key: bytes
    value: bytes
    content_sha256: str
    unknown_key: bool = False


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    title: str
    errors: list[FieldProblem] = field(default_factory=list)
    #: the signing key was not in the register (worth re-reading it once)
    unknown_key: bool = False


def check_event(raw: bytes, partner: Partner, signers: SignerRegistry) -> Accepted | Refused:
    """Validate `raw` (one event, JSON) as published by `partner`. Never raises for bad input."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to read
        return Refused(400, "invalid_json", "The body is not JSON", [FieldProblem(
            field="$", code="invalid_json", message="not valid JSON")])
    if not isinstance(data, dict):
        return Refused(422, "invalid_event", "The event is invalid", [FieldProblem(
            field="$", code="model_type", message="an event must be a JSON object")])
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        problems = [FieldProblem(**p.model_dump()) for p in exc.problems]
        if any(p.code == "too_large" for p in problems):
            return Refused(413, "too_large", "The event is too large", problems)
        return Refused(422, "invalid_event", "The event is invalid", problems)
    if partner.agency == Agency.BUS or event.source.agency == Agency.BUS:
        # What the bus raises (multi-agency concerns) comes only from its concern stage.
        return Refused(403, "not_your_source", "The bus's own events are not published through the gateway", [
            FieldProblem(field="source.agency", code="not_your_source",
                         message="events of agency bus come only from the bus itself")])
    if event.source.agency != partner.agency or event.source.org_id != partner.org_id:
        where = "source.agency" if event.source.agency != partner.agency else "source.org_id"
        return Refused(403, "not_your_source", "Partners publish only their own organisation's events", [
            FieldProblem(field=where, code="not_your_source",
                         message="the event names another organisation than the caller's")])
    try:
        verified = verify_source(data, event, ingress_topic(partner.agency), signers)
    except SourceRejected as exc:
        status = 403 if exc.code in _FORBIDDEN else 422
        return Refused(status, exc.code, "The event's signature was not accepted", [
            FieldProblem(field=exc.field, code=exc.code, message=exc.message)],
            unknown_key=exc.code == "unknown_signing_key")
    return Accepted(str(event.event_id), ingress_topic(partner.agency), event.partition_key(), raw,
                    verified.content_sha256)
