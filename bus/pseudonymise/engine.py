"""Apply operators at ingest and build each recipient's minimised view at delivery.

Operators are chosen by the personal-data tag of each schema field and by the decision,
never by hard-coded field names. A decision's plan is validated once and cached, then
applied to every event that shares it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from bus.policy.data import Partner
from bus.policy.decision import Decision
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring
from bus.pseudonymise.operators import Operator, OperatorContext, get_operator
from bus.pseudonymise.operators.seal import reveal, seal
from bus.pseudonymise.operators.token import token
from bus.records import (
    DeliveredEvent,
    DeliveredSubject,
    Provenance,
    PseudonymisedEvent,
    RedactedUrgency,
    SealedSubject,
    SharingContext,
)
from bus.redaction.errors import RedactionFailed, RedactorUnavailable
from schemas.envelope import Envelope, Subject, SubjectIdentifiers, Urgency
from schemas.registry import payload_model
from schemas.tags import KIND_KEY, Demographic, PersonalData, tagged_fields

IDENTIFIER_KINDS = tuple(tagged_fields(SubjectIdentifiers, PersonalData.IDENTIFIER))
DEMOGRAPHICS = {
    name: Demographic(meta[KIND_KEY]) for name, meta in tagged_fields(Subject, PersonalData.DEMOGRAPHIC).items()
}
_URGENCY_FREE_TEXT = tuple(tagged_fields(Urgency, PersonalData.FREE_TEXT))


def _subject_ad(ingest_id: object, event_type: str, agency: str, org_id: str, token_kid: str) -> str:
    """What a sealed identity is bound to: the bus-assigned ingest id (never the publisher's
    event id, which a publisher can reuse), the event type, the source and the token key."""
    return f"sgbus-subject/{ingest_id}/{event_type}/{agency}/{org_id}/{token_kid}"


def subject_ad(event: PseudonymisedEvent) -> str:
    return _subject_ad(event.ingest_id, event.event_type, event.source.agency.value, event.source.org_id,
                       event.subject.token_kid)


JUSTIFICATION = "urgency.justification"


def text_ad(subject_associated: str, field: str) -> str:
    """A free-text original is bound like the subject, and to its own field."""
    return f"{subject_associated}/text/{field}"


@lru_cache(maxsize=64)
def free_text_fields(event_type: str) -> frozenset[str]:
    return frozenset(tagged_fields(payload_model(event_type), PersonalData.FREE_TEXT))


def _subject_names(subject: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(subject[n]) for n, kind in DEMOGRAPHICS.items() if kind is Demographic.NAME and subject.get(n))


def texts_to_redact(event: Envelope, override_role: str | None = None,
                    only: frozenset[str] | None = None) -> dict[str, str]:
    """The free text of an event that ingest redacts, by field: the payload's free-text fields
    in `only` (None: all; Partnership.redact_fields), and the urgency justification when its
    declaration was verified (otherwise the urgency block is not kept)."""
    payload = getattr(event, "payload")  # noqa: B009
    texts = {name: str(getattr(payload, name)) for name in free_text_fields(event.event_type)
             if getattr(payload, name, None) is not None and (only is None or name in only)}
    if override_role is not None and event.urgency is not None:
        texts.update({f"urgency.{name}": str(getattr(event.urgency, name)) for name in _URGENCY_FREE_TEXT})
    return texts


def subject_names(event: Envelope) -> tuple[str, ...]:
    """The subject's own names, which redaction finds in any case."""
    return _subject_names(event.subject.model_dump(mode="json"))


def _subject_values(subject: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(kind, value) of the subject's identifiers, postcode and dates, which redaction finds
    however a note writes them (an agreement may redact the text but drop or generalise these)."""
    ids = subject.get("identifiers") or {}
    values = [(kind, str(value)) for kind, value in sorted(ids.items()) if value]
    values += [(name, str(subject[name])) for name in ("postcode", "date_of_birth", "expected_delivery_date")
               if subject.get(name)]
    return tuple(values)


def subject_values(event: Envelope) -> tuple[tuple[str, str], ...]:
    return _subject_values(event.subject.model_dump(mode="json"))


def redact_texts(items: list[tuple[Envelope, str | None]],
                 only: list[frozenset[str] | None] | None = None) -> list[dict[str, str]]:
    """The redacted copy of each event's free text (texts_to_redact; `only`: per event, the
    fields wanted), all run through the redactor together: one call for a batch is about twice
    as fast as one per text."""
    from bus.redaction import default_redactor

    wanted = only if only is not None else [None] * len(items)
    per_event = [texts_to_redact(event, role, fields) for (event, role), fields in zip(items, wanted, strict=True)]
    work = [(text, names, values) for (event, _), texts in zip(items, per_event, strict=True) if texts
            for names, values in [(subject_names(event), subject_values(event))]  # once per event
            for text in texts.values()]
    done = iter(default_redactor().redact_many(work) if work else [])
    return [{name: next(done) for name in texts} for texts in per_event]


def pseudonymise_at_ingest(event: Envelope, keyring: Keyring, *, ingest_id: UUID, provenance: Provenance,
                           override_role: str | None = None,
                           redacted: Mapping[str, str] | None = None) -> PseudonymisedEvent:
    """Identifiers become controller tokens, the identity is sealed to this event, and free
    text is sealed and redacted, so sg.events holds no raw identifier or name. The urgency
    block is kept only with a verified declaration (`override_role`). `redacted` is the
    redacted free text from redact_texts, when the caller redacts a batch at once."""
    subject = event.subject.model_dump(mode="json")
    token_kid = keyring.token.active
    tokens = {
        kind: token(keyring, CONTROLLER_DOMAIN, kind, value, token_kid)
        for kind, value in event.subject.identifiers.present().items()
    }
    associated = _subject_ad(ingest_id, event.event_type, event.source.agency.value, event.source.org_id, token_kid)
    sealed = seal(keyring, subject, associated)
    if redacted is None:
        redacted = redact_texts([(event, override_role)])[0]
    sealed_text: dict[str, dict[str, str]] = {}
    payload: dict[str, Any] = getattr(event, "payload").model_dump(mode="json")  # noqa: B009
    unredacted = []
    for name in free_text_fields(event.event_type):
        if payload.get(name) is not None:
            sealed_text[name] = seal(keyring, payload[name], text_ad(associated, name))
            if name in redacted:
                payload[name] = redacted[name]
            else:  # no agreement asks for its redacted copy: sealed only, redacted by route if one does
                del payload[name]
                unredacted.append(name)
    urgency: RedactedUrgency | None = None
    if override_role is not None and event.urgency is not None:
        sealed_text[JUSTIFICATION] = seal(keyring, event.urgency.justification, text_ad(associated, JUSTIFICATION))
        # Validated as built (a model_copy is not): what is written to sg.events reads back.
        urgency = RedactedUrgency.model_validate({
            **event.urgency.model_dump(), "declared_by_role": override_role,
            **{name: redacted[f"urgency.{name}"] for name in _URGENCY_FREE_TEXT},
        })
    return PseudonymisedEvent(
        ingest_id=ingest_id,
        event_id=event.event_id,
        event_type=event.event_type,
        source=event.source,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        ingested_at=datetime.now(UTC),
        classification=event.classification,
        subject=SealedSubject(tokens=tokens, token_kid=token_kid, sealed=sealed),
        payload=payload,
        sealed_text=sealed_text,
        unredacted=unredacted,
        urgency=urgency,
        provenance=provenance,
    )


def policy_attributes(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Payload attributes OPA may see: everything except free text."""
    free_text = free_text_fields(event_type)
    return {k: v for k, v in payload.items() if k not in free_text}


# -- per-recipient views --------------------------------------------------------------------------
Rule = tuple[Operator, Mapping[str, str]]

_IDENTIFIER_MODES: dict[str, tuple[str, dict[str, str]]] = {
    "reveal": ("reveal", {}), "token": ("token", {}), "drop": ("drop", {}),
}
_DEMOGRAPHIC_MODES: dict[str, tuple[str, dict[str, str]]] = {
    "full": ("keep", {}), "drop": ("drop", {}),
    "year_month": ("generalise", {"level": "year_month"}), "district": ("generalise", {"level": "district"}),
}


@dataclass(frozen=True)
class ViewPlan:
    """Which operator each personal-data field gets for one decision; validated when built."""

    identifiers: dict[str, Rule]
    demographics: dict[str, Rule]

    @staticmethod
    def _rule(modes: Mapping[str, tuple[str, dict[str, str]]], mode: str) -> Rule:
        name, params = modes.get(mode, ("drop", {}))  # anything unknown shares nothing
        operator = get_operator(name)
        operator.validate(params)
        return operator, params


@lru_cache(maxsize=512)
def _plan(identifier_modes: tuple[tuple[str, str], ...], dob: str, postcode: str, name: str) -> ViewPlan:
    modes = dict(identifier_modes)
    per_kind = {Demographic.DOB: dob, Demographic.POSTCODE: postcode, Demographic.NAME: name}
    return ViewPlan(
        identifiers={k: ViewPlan._rule(_IDENTIFIER_MODES, modes.get(k, "drop")) for k in IDENTIFIER_KINDS},
        demographics={f: ViewPlan._rule(_DEMOGRAPHIC_MODES, per_kind[kind]) for f, kind in DEMOGRAPHICS.items()},
    )


def plan_for(decision: Decision) -> ViewPlan:
    d = decision.demographics
    return _plan(tuple(sorted(decision.identifiers.items())), d.dob, d.postcode, d.name)


def reveal_subject(event: PseudonymisedEvent, keyring: Keyring) -> dict[str, Any]:
    """Open the sealed identity (inside the bus only); one opening serves every recipient."""
    subject: dict[str, Any] = reveal(keyring, event.subject.sealed, subject_ad(event))
    return subject


KEY_KINDS = ("nhs_number", "la_child_id", "upn", "police_person_id")  # the order of subject_key's


def partner_key(subject: dict[str, Any], partner: Partner, agreement: str, keyring: Keyring, fallback: str,
                *, override: bool = False) -> str:
    """The Kafka key of a delivery on `sg.deliver.<partner>`: a token of the child in a domain
    of the partner and the agreement it is shared under (`key:<partner id>:<agreement>`), never
    one the partner is delivered as an identifier. So a key cannot bring back an identifier an
    agreement drops: not directly (before, it was the child's NHS-number token in the partner's
    linkage domain, whatever the decision said), nor by matching the key of a copy shared under
    an agreement that drops every identifier to that of one shared under another that reveals
    them (before, one domain per partner). Partners cannot match each other's records by key.
    One child's copies under one agreement still share a key, hence a partition and an order:
    which does tie those copies together for that partner. A child with no identifier is keyed
    by a token of `fallback` (the bus's ingest id, never sent as it is). An emergency override
    reveals what the agreement may not: its copies have a domain of their own."""
    domain = f"key:{partner.id}:{agreement}" + (":override" if override else "")
    ids = subject.get("identifiers") or {}
    for kind in KEY_KINDS:
        if ids.get(kind):
            return token(keyring, domain, kind, str(ids[kind]))
    return token(keyring, domain, "ingest_id", fallback)


def redact_later(event: PseudonymisedEvent, decision: Decision) -> list[str]:
    """Free-text fields the decision wants redacted that ingest sealed without a redacted copy."""
    return [name for name, mode in decision.free_text.items() if mode == "redact" and name in event.unredacted]


def original_text(event: PseudonymisedEvent, name: str, keyring: Keyring) -> str:
    """A free-text field's original, opened from its seal."""
    text: str = reveal(keyring, event.sealed_text[name], text_ad(subject_ad(event), name))
    return text


def redact_each(items: list[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]]) -> list[str | None]:
    """Redacted copies of (text, subject names, subject values), together; None for a text that
    cannot be fully analysed. Raises RedactorUnavailable (nothing can be redacted now)."""
    from bus.redaction import default_redactor

    redactor = default_redactor()
    try:
        return list(redactor.redact_many(items))
    except RedactorUnavailable:
        raise
    except Exception:  # one text failed: each alone, so only that one goes without
        out: list[str | None] = []
        for text, names, values in items:
            try:
                out.append(redactor.redact(text, names, values))
            except RedactorUnavailable:
                raise
            except Exception:
                out.append(None)
        return out


def names_in(subject: dict[str, Any]) -> tuple[str, ...]:
    """The opened subject's own names (what redaction always finds)."""
    return _subject_names(subject)


def values_in(subject: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The opened subject's own identifiers, postcode and dates (what redaction always finds)."""
    return _subject_values(subject)


def recipient_view(
    event: PseudonymisedEvent, decision: Decision, partner: Partner, keyring: Keyring,
    subject: dict[str, Any] | None = None, redacted: Mapping[str, str] | None = None,
) -> DeliveredEvent:
    """The partner's copy: only the fields, identifier modes and demographics allowed.
    `subject` is the already opened identity, when the caller builds several views of one event;
    `redacted`: the redacted copies of the event's `unredacted` fields the decision asks for."""
    if not decision.allow or decision.agreement is None:
        raise ValueError("a view is built only for an allowed decision")
    plan = plan_for(decision)
    if subject is None:
        subject = reveal_subject(event, keyring)
    raw_ids = subject.get("identifiers") or {}
    identifiers: dict[str, str] = {}
    for kind, (operator, params) in plan.identifiers.items():
        value = raw_ids.get(kind)
        if value is None:
            continue
        out = operator.operate(value, OperatorContext(keyring, kind=kind, domain=partner.linkage_domain), params)
        if out is not None:
            identifiers[kind] = out
    demographics: dict[str, Any] = {}
    for field_name, (operator, params) in plan.demographics.items():
        value = subject.get(field_name)
        if value is not None:
            ctx = OperatorContext(keyring, kind=DEMOGRAPHICS[field_name].value)
            demographics[field_name] = operator.operate(value, ctx, params)
    # Free text only as the decision's `free_text` says: the redacted copy from sg.events, or the
    # original, opened from its seal; never through `fields`.
    free_text = free_text_fields(event.event_type)
    payload = {k: v for k, v in event.payload.items() if k not in free_text and decision.shares_field(k)}
    for name, mode in decision.free_text.items():
        if name not in free_text or (event.payload.get(name) is None and name not in event.unredacted):
            continue
        if mode == "redact" and name in event.unredacted:
            if redacted is None or name not in redacted:  # never the original in its place
                raise RedactionFailed("free text asked redacted has no redacted copy")
            payload[name] = redacted[name]
        elif mode == "redact":
            payload[name] = event.payload[name]
        elif mode == "reveal":
            payload[name] = original_text(event, name, keyring)
    return DeliveredEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        source=event.source,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        classification=event.classification,
        recipient=partner.id,
        subject=DeliveredSubject(identifiers=identifiers, **demographics),
        payload=payload,
        sharing=SharingContext(
            agreement=decision.agreement,
            override=decision.override,
            lawful_basis=decision.lawful_basis,
            purpose=decision.purpose,
            policy_revision=decision.revision,
            retention_days=decision.retention_days,
            delivered_at=datetime.now(UTC),
        ),
        provenance=event.provenance,
    )
