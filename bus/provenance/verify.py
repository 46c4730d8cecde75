"""Checks at ingest: the event came from the organisation it names, through that organisation's
agency's topic, signed with a key registered to it; an override is declared by a registered role.
Also the check a recipient runs on a delivered view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bus.provenance.registry import SignerRegistry
from bus.provenance.signing import (
    BadSignature,
    content_digest,
    declaration_digest,
    event_statement,
    override_statement,
    parse_jws,
    verify_statement,
)
from bus.topics import ingress_topic
from schemas.envelope import Envelope


class SourceRejected(Exception):
    """The event cannot be shown to come from its claimed source; `code` goes to the DLQ."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(code)
        self.code, self.field, self.message = code, field, message


@dataclass(frozen=True)
class Verified:
    kid: str
    content_sha256: str
    signature: str
    #: the registered role of a verified override declaration
    override_role: str | None = None
    #: why an event's urgency declaration was not accepted (the event is still routed, without it)
    override_refused: str | None = None


def verify_source(data: dict[str, Any], event: Envelope, topic: str, signers: SignerRegistry) -> Verified:
    """`data` is the event as received (JSON object), `event` its validated model."""
    if topic != ingress_topic(event.source.agency):
        raise SourceRejected("source_topic_mismatch", "source.agency",
                             f"a {event.source.agency.value} event arrived on {topic}")
    if not event.signature:
        raise SourceRejected("unsigned", "signature", "the event is not signed by its source organisation")
    if not event.nonce:
        raise SourceRejected("missing_nonce", "nonce", "a signed event needs a random nonce (see README)")
    try:
        jws = parse_jws(event.signature)
    except BadSignature as exc:
        raise SourceRejected(str(exc), "signature", "the signature is not a detached EdDSA JWS") from None
    key = signers.publisher(jws.kid)
    if key is None:
        raise SourceRejected("unknown_signing_key", "signature", "the signing key is not registered")
    if key.org_id != event.source.org_id or key.agency != event.source.agency:
        raise SourceRejected("signer_not_source", "source.org_id",
                             "the signing key is registered to another organisation")
    digest = content_digest(data)
    try:
        verify_statement(jws, signers.public_key(jws.kid), event_statement(
            jws.kid, str(event.event_id), event.event_type, event.source.org_id, digest))
    except BadSignature as exc:
        raise SourceRejected(str(exc), "signature", "the signature does not match the event") from None
    role, refused = _override(data, event, signers)
    return Verified(jws.kid, digest, event.signature, role, refused)


def _override(data: dict[str, Any], event: Envelope, signers: SignerRegistry) -> tuple[str | None, str | None]:
    """(verified role, None), or (None, reason) when an urgency block is not properly declared."""
    urgency = event.urgency
    if urgency is None:
        return None, None
    if not urgency.declaration:
        return None, "override_undeclared"
    try:
        jws = parse_jws(urgency.declaration)
    except BadSignature:
        return None, "override_malformed_declaration"
    declarer = signers.declarer(jws.kid)
    if declarer is None:
        return None, "override_unknown_declarer"
    if declarer.role != urgency.declared_by_role:
        return None, "override_role_mismatch"
    try:
        verify_statement(jws, signers.public_key(jws.kid), override_statement(
            jws.kid, str(event.event_id), declarer.role, declaration_digest(data)))
    except BadSignature:
        return None, "override_bad_declaration"
    return declarer.role, None


def verify_delivered(view: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    """What a recipient runs on a delivered event (JSON object): does the publisher's
    signature cover this event id, type and source? `public_key` is the key registered as
    `view["provenance"]["kid"]` (from `sgbus partners keys list --json`), and the caller checks
    that this key is registered to the view's `source.org_id` and agency."""
    try:
        prov = view.get("provenance") or {}
        jws = parse_jws(str(prov.get("signature", "")))
        if jws.kid != prov.get("kid"):
            return False
        verify_statement(jws, public_key, event_statement(
            jws.kid, str(view["event_id"]), str(view["event_type"]), str(view["source"]["org_id"]),
            str(prov["content_sha256"])))
    except (BadSignature, KeyError, TypeError, AttributeError):
        return False
    return True
