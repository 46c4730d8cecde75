"""Ingest: validate a raw event, check who sent it, pseudonymise it, or explain its rejection
for sg.dlq."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bus.provenance.registry import SignerRegistry
from bus.provenance.verify import SourceRejected, Verified, verify_source
from bus.pseudonymise.engine import pseudonymise_at_ingest, redact_texts
from bus.pseudonymise.keyring import Keyring
from bus.records import DeadLetter, Provenance, PseudonymisedEvent
from bus.redaction.errors import RedactionFailed, RedactorUnavailable
from schemas.envelope import Envelope
from schemas.registry import EVENT_MODELS, InvalidEvent, Problem, capped, parse_event

_INGEST_NS = uuid.UUID("6f1c2b9e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")


def ingest_id_for(topic: str, partition: int, offset: int, timestamp_ms: int) -> uuid.UUID:
    """The bus's own id of one ingress record: the same on every replay of that record (so a
    crash and retry neither loses nor doubles it), never the same for two records (the record
    timestamp tells apart an offset reused after a topic was recreated)."""
    return uuid.uuid5(_INGEST_NS, f"{topic}/{partition}/{offset}/{timestamp_ms}")

_SAFE_TYPE = re.compile(r"^[a-z_]{2,20}\.[a-z_]{2,60}\.v[0-9]{1,3}$")


@dataclass(frozen=True)
class IngestOutcome:
    event: PseudonymisedEvent | None = None
    dead_letter: DeadLetter | None = None
    #: why an urgency block was not accepted (the event itself is routed without the override)
    override_refused: str | None = None
    #: the event's JSON, as written to sg.events, when ingest's process serialised it already
    event_json: bytes | None = None


def _safe_header(raw: bytes) -> tuple[str | None, str | None]:
    """event_id and event_type of a rejected event, only when they are safe to repeat."""
    try:
        data = json.loads(raw)
    except Exception:
        return None, None
    if not isinstance(data, dict):
        return None, None
    event_id = event_type = None
    try:
        event_id = str(uuid.UUID(str(data.get("event_id"))))
    except ValueError:
        pass
    candidate = data.get("event_type")
    # Only a type of the catalogue: a made-up one in the right shape could still spell a name.
    if isinstance(candidate, str) and _SAFE_TYPE.match(candidate) and candidate in EVENT_MODELS:
        event_type = candidate
    return event_id, event_type


@dataclass(frozen=True)
class Record:
    """One ingress record, as it came off its topic."""

    raw: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0


@dataclass(frozen=True)
class Checked:
    """A record that parsed and whose source and signature were verified."""

    record: Record
    event: Envelope
    verified: Verified


def check(record: Record, signers: SignerRegistry) -> Checked | IngestOutcome:
    """Parse and verify one record; never raises for bad input (a dead letter with reasons)."""
    try:
        event = parse_event(record.raw)
        return Checked(record, event, verify_source(json.loads(record.raw), event, record.topic, signers))
    except InvalidEvent as exc:
        reasons = [p.model_dump() for p in exc.problems]
    except SourceRejected as exc:
        reasons = [{"field": exc.field, "code": exc.code, "message": exc.message}]
    except Exception as exc:  # a bug must not stop the stream; the type name is safe to record
        reasons = internal_error(exc)
    return rejected_record(record, reasons)


def pseudonymise_checked(checked: list[Checked], keyring: Keyring,
                         redact_fields: Callable[[str], frozenset[str] | None] | None = None) -> list[IngestOutcome]:
    """Pseudonymise verified records, their free text redacted in one pass for the batch: the
    fields `redact_fields(event_type)` names (Partnership.redact_fields; None: all), the rest
    sealed only, redacted by route if a decision asks. Raises RedactorUnavailable (nothing
    decided: hold the batch and retry); a text that cannot be fully analysed dead-letters its
    own event only."""
    only = [redact_fields(c.event.event_type) for c in checked] if redact_fields is not None else None
    try:
        redacted: list[dict[str, str] | None] = list(
            redact_texts([(c.event, c.verified.override_role) for c in checked], only))
    except RedactorUnavailable:
        raise  # nothing can be redacted now: the caller holds the batch and tries again
    except Exception:  # one text failed (e.g. RedactionFailed): try each event alone, so it costs one event
        redacted = [None] * len(checked)
    out = []
    for i, (c, texts) in enumerate(zip(checked, redacted, strict=True)):
        r = c.record
        try:
            if texts is None:  # this event alone, so a text that fails costs only its own event
                texts = redact_texts([(c.event, c.verified.override_role)], [only[i]] if only is not None else None)[0]
            provenance = Provenance(kid=c.verified.kid, content_sha256=c.verified.content_sha256,
                                    signature=c.verified.signature)
            event = pseudonymise_at_ingest(c.event, keyring, redacted=texts, provenance=provenance,
                                           ingest_id=ingest_id_for(r.topic, r.partition, r.offset, r.timestamp_ms),
                                           override_role=c.verified.override_role)
            if r.timestamp_ms > 0:
                event = event.model_copy(update={"published_at": datetime.fromtimestamp(r.timestamp_ms / 1000, UTC)})
            out.append(IngestOutcome(event=event, override_refused=c.verified.override_refused))
        except RedactorUnavailable:
            raise
        except RedactionFailed:
            out.append(rejected_record(r, [{"field": "$", "code": "redaction_failed",
                                      "message": "the free text could not be fully analysed for redaction"}]))
        except Exception as exc:
            out.append(rejected_record(r, internal_error(exc)))
    return out


def needs_fresh_signers(out: Checked | IngestOutcome) -> bool:
    """Whether a record's signing key or override declarer was unknown: a key issued since the
    register was last read; read it again, then decide."""
    if isinstance(out, Checked):
        return out.verified.override_refused == "override_unknown_declarer"
    return out.dead_letter is not None and out.dead_letter.reasons[0]["code"] == "unknown_signing_key"


def prepare_batch(records: list[Record], signers: SignerRegistry, keyring: Keyring,
                  redact_fields: Callable[[str], frozenset[str] | None] | None = None, *,
                  final: bool = True) -> list[IngestOutcome | None]:
    """Check and pseudonymise a batch: one outcome per record, in order. Unless `final`, None
    for a record whose key or declarer `signers` does not know (the caller reads the register
    again and prepares those once more, finally). Raises RedactorUnavailable (hold the batch)."""
    checked = [check(r, signers) for r in records]
    again = set() if final else {i for i, c in enumerate(checked) if needs_fresh_signers(c)}
    verified = [c for i, c in enumerate(checked) if isinstance(c, Checked) and i not in again]
    done = iter(pseudonymise_checked(verified, keyring, redact_fields))
    return [None if i in again else next(done) if isinstance(c, Checked) else c for i, c in enumerate(checked)]


def ingest(raw: bytes, keyring: Keyring, signers: SignerRegistry, *, topic: str, partition: int,
           offset: int, timestamp_ms: int = 0) -> IngestOutcome:
    """Check and pseudonymise one record. Never raises for bad input: every failure becomes a
    dead letter with reasons."""
    checked = check(Record(raw, topic, partition, offset, timestamp_ms), signers)
    return checked if isinstance(checked, IngestOutcome) else pseudonymise_checked([checked], keyring)[0]


def internal_error(exc: BaseException) -> list[dict[str, str]]:
    """A dead letter's reasons for a bug: the exception's type name only (never its message,
    which may quote the event)."""
    return [{"field": "$", "code": "internal_error", "message": type(exc).__name__}]


def rejected_record(record: Record, reasons: list[dict[str, str]]) -> IngestOutcome:
    """`record`'s dead letter, for `reasons`."""
    return rejected(record.raw, reasons, topic=record.topic, partition=record.partition, offset=record.offset)


def rejected(raw: bytes, reasons: list[dict[str, str]], *, topic: str, partition: int, offset: int,
             ) -> IngestOutcome:
    event_id, event_type = _safe_header(raw)
    reasons = [p.model_dump() for p in capped([Problem(field=str(r.get("field", "$")), code=str(r.get("code", "")),
                                                       message=str(r.get("message", ""))) for r in reasons])]
    return IngestOutcome(
        dead_letter=DeadLetter(
            dlq_id=uuid.uuid4(), stage="ingest", topic=topic, partition=partition, offset=offset,
            event_id=event_id, event_type=event_type, reasons=reasons, rejected_at=datetime.now(UTC),
        )
    )
