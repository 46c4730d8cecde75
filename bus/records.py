"""Messages on the bus's own topics: pseudonymised events, deliveries, audit, dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from bus.replay_proofs import PROOF_PATTERN
from schemas.envelope import Source


class Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RedactedUrgency(Rec):
    """An urgency block on sg.events: its declaration verified at ingest, its justification the
    redacted copy (the original is sealed in `sealed_text`). Redaction changes a text's length
    (a long name becomes `[PERSON]`), so the publisher's bounds on the original
    (schemas.envelope.Urgency: 20-1,000 characters) are not the copy's: under them a valid
    justification that redacted short was refused wherever sg.events is read again."""

    urgent_risk_of_significant_harm: Literal[True]
    justification: str = Field(max_length=20_000)
    declared_by_role: str = Field(min_length=2, max_length=80)
    declaration: str | None = Field(default=None, max_length=200)


class SealedSubject(Rec):
    """Controller tokens per identifier, and the whole subject sealed with AES-GCM."""

    tokens: dict[str, str]
    token_kid: str
    sealed: dict[str, str] = Field(repr=False)


class Provenance(Rec):
    """The publisher's signature, checked at ingest, carried so a recipient can check it too."""

    kid: str
    content_sha256: str
    signature: str


class PseudonymisedEvent(Rec):
    """An event on sg.events: validated, source verified, identifiers tokenised, identity sealed."""

    #: assigned by the bus from the ingress record (topic, partition, offset, timestamp): what
    #: sealing, caching and the audit's dedupe bind to; the publisher's event_id is only a claim
    ingest_id: UUID
    event_id: UUID
    event_type: str
    source: Source
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    ingested_at: AwareDatetime
    #: the ingress record's timestamp (when the publisher sent it), for end-to-end latency
    published_at: AwareDatetime | None = None
    classification: str
    subject: SealedSubject
    #: free text is the redacted copy; the originals are in `sealed_text`
    payload: dict[str, Any]
    #: each free-text field's original (and the override justification's, as "urgency.justification"),
    #: sealed like the subject; opened only for a decision that says `reveal`
    sealed_text: dict[str, dict[str, str]] = Field(default_factory=dict, repr=False)
    #: free-text fields sealed without a redacted copy (no agreement asked for one when ingest
    #: ran): absent from `payload`; route redacts the original when a decision says `redact`
    unredacted: list[str] = Field(default_factory=list)
    #: present only when the declaration was verified; declared_by_role is then the registered role
    urgency: RedactedUrgency | None = None
    provenance: Provenance
    #: set by route for an event it fetched for a ReplayRequest: route only to these recipients
    #: (never on sg.events or sg.replay themselves)
    replay_for: list[str] | None = None

    @property
    def subject_key(self) -> str:
        """Partition key: the child's controller token, so one child's events stay in order."""
        tokens = self.subject.tokens
        for kind in ("nhs_number", "la_child_id", "upn", "police_person_id"):
            if kind in tokens:
                return tokens[kind]
        return str(self.event_id)


class SharingContext(Rec):
    agreement: str
    override: bool = False
    lawful_basis: list[str]
    purpose: str
    policy_revision: str
    retention_days: int
    delivered_at: AwareDatetime


class DeliveredSubject(Rec):
    identifiers: dict[str, str]
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: str | None = None
    expected_delivery_date: str | None = None
    postcode: str | None = None


class DeliveredEvent(Rec):
    """One partner's view of an event, minimised and pseudonymised as its decision says."""

    event_id: UUID
    event_type: str
    source: Source
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    classification: str
    recipient: str
    subject: DeliveredSubject
    payload: dict[str, Any]
    sharing: SharingContext
    provenance: Provenance


class AuditRecord(Rec):
    """One policy decision, allow or deny, with everything needed to explain it later."""

    audit_id: UUID
    ingest_id: UUID
    event_id: UUID
    event_type: str
    source_org: str
    source_agency: str
    recipient: str
    decision: Literal["allow", "deny", "view_failed"]  # view_failed: allowed, but nothing delivered
    agreement: str | None
    lawful_basis: list[str]
    purpose: str
    fields_shared: list[str]
    free_text_modes: dict[str, str] = Field(default_factory=dict)
    identifier_modes: dict[str, str]
    reasons: list[str]
    override: bool = False
    #: sealed (AES-GCM, like the subject): no free text is stored in the audit in clear
    override_justification: dict[str, str] | None = None
    override_role: str | None = None
    policy_revision: str
    subject_token: str
    decided_at: datetime
    #: view_failed only: what a replay request must carry back for this share (bus/replay_proofs.py).
    #: Left out when None, so every other record is written as an earlier release wrote it (an
    #: earlier audit stage refuses a field it does not know).
    replay_proof: str | None = Field(default=None, exclude_if=lambda v: v is None)


class ReplayRequest(Rec):
    """What `sgbus replay --failed` puts on sg.replay: where an event is on sg.events and which
    recipients missed it; never the event. Route fetches the event from sg.events itself (where
    only ingest writes), so whoever may write sg.replay cannot change an event, add an emergency
    override to it or make one up: at most have a real event decided again for recipients the
    policy still allows, decided and audited as any share."""

    ingest_id: UUID
    # Kafka's own bounds (a partition is an int32, an offset an int64): beyond them the client
    # raises rather than answers, and one such request would stop the route worker on every start.
    events_partition: int = Field(ge=0, le=2**31 - 1)
    events_offset: int = Field(ge=0, le=2**63 - 1)
    replay_for: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,48}$")]] = Field(
        min_length=1, max_length=100)  # partner ids (bus/policy/data.py): bounded, so a refusal stays small
    #: recipient -> the proof its view_failed audit record holds (bus/replay_proofs.py)
    proofs: dict[str, Annotated[str, StringConstraints(pattern=PROOF_PATTERN)]] = Field(max_length=100)


class DeadLetter(Rec):
    """A rejected input: where it came from and why; never the rejected content itself."""

    dlq_id: UUID
    stage: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    event_type: str | None
    reasons: list[dict[str, str]]
    rejected_at: AwareDatetime


# One sg.audit message carries the audit records of (part of) one route batch, in decision
# order: a tenth of the Kafka messages of one-per-record, and the chain receives them together.
AUDIT_RECORDS_PER_MESSAGE = 200
_AUDIT_BATCH = TypeAdapter(list[AuditRecord])


def encode_audit_batches(records: list[AuditRecord]) -> list[tuple[bytes, bytes]]:
    """(key, value) sg.audit messages for `records`; the key is the first record's event id."""
    out = []
    for i in range(0, len(records), AUDIT_RECORDS_PER_MESSAGE):
        chunk = records[i:i + AUDIT_RECORDS_PER_MESSAGE]
        out.append((str(chunk[0].event_id).encode(), _AUDIT_BATCH.dump_json(chunk)))
    return out


def decode_audit_batch(value: bytes) -> list[AuditRecord]:
    """Raises pydantic.ValidationError for a malformed message."""
    return _AUDIT_BATCH.validate_json(value)
