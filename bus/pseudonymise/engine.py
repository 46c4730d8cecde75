"""Apply pseudonymisation at ingest and build each recipient's minimised view at delivery."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bus.policy.data import Partner
from bus.policy.decision import Decision
from bus.pseudonymise import operators
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring
from bus.records import (
    DeliveredEvent,
    DeliveredSubject,
    PseudonymisedEvent,
    SealedSubject,
    SharingContext,
)
from schemas.envelope import Envelope, Subject, SubjectIdentifiers
from schemas.registry import payload_model
from schemas.tags import KIND_KEY, Demographic, PersonalData, tagged_fields

_IDENTIFIER_KINDS = tuple(tagged_fields(SubjectIdentifiers, PersonalData.IDENTIFIER))
_DEMOGRAPHICS = {
    name: Demographic(meta[KIND_KEY])
    for name, meta in tagged_fields(Subject, PersonalData.DEMOGRAPHIC).items()
}


def _subject_ad(event_id: object) -> str:
    return f"{event_id}/subject"


def pseudonymise_at_ingest(event: Envelope, keyring: Keyring) -> PseudonymisedEvent:
    """Replace identifiers with controller tokens and seal the identity to this event."""
    identifiers = event.subject.identifiers.present()
    tokens = {
        kind: operators.token(keyring, CONTROLLER_DOMAIN, kind, value)
        for kind, value in identifiers.items()
    }
    sealed = operators.seal(keyring, event.subject.model_dump(mode="json"), _subject_ad(event.event_id))
    payload: Any = getattr(event, "payload")  # noqa: B009 - every concrete event has one
    return PseudonymisedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        source=event.source,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        ingested_at=datetime.now(UTC),
        classification=event.classification,
        subject=SealedSubject(tokens=tokens, sealed=sealed),
        payload=payload.model_dump(mode="json"),
        urgency=event.urgency,
    )


def policy_attributes(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Payload attributes OPA may see: everything except free text."""
    free_text = tagged_fields(payload_model(event_type), PersonalData.FREE_TEXT)
    return {k: v for k, v in payload.items() if k not in free_text}


def recipient_view(
    event: PseudonymisedEvent, decision: Decision, partner: Partner, keyring: Keyring
) -> DeliveredEvent:
    """The partner's copy: only the fields, identifier modes and demographics allowed."""
    if not decision.allow or decision.agreement is None:
        raise ValueError("a view is built only for an allowed decision")
    subject = operators.reveal(keyring, event.subject.sealed, _subject_ad(event.event_id))
    identifiers: dict[str, str] = {}
    for kind in _IDENTIFIER_KINDS:
        value = (subject.get("identifiers") or {}).get(kind)
        mode = decision.identifiers.get(kind, "drop")
        if value is None or mode == "drop":
            continue
        identifiers[kind] = (
            value if mode == "reveal"
            else operators.token(keyring, partner.linkage_domain, kind, value)
        )
    demo: dict[str, str | None] = {}
    for name, kind in _DEMOGRAPHICS.items():
        value = subject.get(name)
        if value is None:
            continue
        if kind is Demographic.NAME:
            demo[name] = value if decision.demographics.name == "full" else None
        elif kind is Demographic.DOB:
            demo[name] = operators.generalise_dob(value, decision.demographics.dob)
        elif kind is Demographic.POSTCODE:
            demo[name] = operators.generalise_postcode(value, decision.demographics.postcode)
    return DeliveredEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        source=event.source,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        classification=event.classification,
        recipient=partner.id,
        subject=DeliveredSubject(identifiers=identifiers, **demo),
        payload={k: v for k, v in event.payload.items() if decision.shares_field(k)},
        sharing=SharingContext(
            agreement=decision.agreement,
            override=decision.override,
            lawful_basis=decision.lawful_basis,
            purpose=decision.purpose,
            policy_revision=decision.revision,
            retention_days=decision.retention_days,
            delivered_at=datetime.now(UTC),
        ),
    )
