"""Ingest: validate a raw event, pseudonymise it, or explain its rejection for sg.dlq."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from bus.pseudonymise.engine import pseudonymise_at_ingest
from bus.pseudonymise.keyring import Keyring
from bus.records import DeadLetter, PseudonymisedEvent
from schemas.registry import InvalidEvent, parse_event

_SAFE_TYPE = re.compile(r"^[a-z_]{2,20}\.[a-z_]{2,60}\.v[0-9]{1,3}$")


@dataclass(frozen=True)
class IngestOutcome:
    event: PseudonymisedEvent | None = None
    dead_letter: DeadLetter | None = None


def _safe_header(raw: bytes) -> tuple[str | None, str | None]:
    """event_id and event_type of a rejected event, only when they are safe to repeat."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    event_id = event_type = None
    try:
        event_id = str(uuid.UUID(str(data.get("event_id"))))
    except ValueError:
        pass
    candidate = data.get("event_type")
    if isinstance(candidate, str) and _SAFE_TYPE.match(candidate):
        event_type = candidate
    return event_id, event_type


def ingest(raw: bytes, keyring: Keyring, *, topic: str, partition: int, offset: int) -> IngestOutcome:
    """Never raises for bad input: every failure becomes a dead letter with reasons."""
    try:
        event = parse_event(raw)
        return IngestOutcome(event=pseudonymise_at_ingest(event, keyring))
    except InvalidEvent as exc:
        reasons = [p.model_dump() for p in exc.problems]
    except Exception as exc:  # a bug must not stop the stream; the type name is safe to record
        reasons = [{"field": "$", "code": "internal_error", "message": type(exc).__name__}]
    event_id, event_type = _safe_header(raw)
    return IngestOutcome(
        dead_letter=DeadLetter(
            dlq_id=uuid.uuid4(), stage="ingest", topic=topic, partition=partition, offset=offset,
            event_id=event_id, event_type=event_type, reasons=reasons, rejected_at=datetime.now(UTC),
        )
    )
