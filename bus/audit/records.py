"""Build the audit record of one decision."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bus.policy.decision import Decision
from bus.pseudonymise.engine import JUSTIFICATION
from bus.records import AuditRecord, PseudonymisedEvent


def audit_record(event: PseudonymisedEvent, decision: Decision, *, view_failed: str | None = None,
                 replay_proof: str | None = None) -> AuditRecord:
    """`view_failed`: the decision allowed the share but its view could not be built (the
    reason); recorded as such, not as a delivery, with the proof a replay of it must carry."""
    outcome = ("allow" if view_failed is None else "view_failed") if decision.allow else "deny"
    reasons = decision.reasons if view_failed is None else [*decision.reasons, f"view_failed: {view_failed}"]
    return AuditRecord(
        audit_id=uuid.uuid4(),
        ingest_id=event.ingest_id,
        event_id=event.event_id,
        event_type=event.event_type,
        source_org=event.source.org_id,
        source_agency=event.source.agency.value,
        recipient=decision.recipient,
        decision=outcome,
        agreement=decision.agreement,
        lawful_basis=decision.lawful_basis,
        purpose=decision.purpose,
        fields_shared=(decision.fields + sorted(decision.free_text)) if decision.allow else [],
        free_text_modes=dict(decision.free_text) if decision.allow else {},
        identifier_modes=decision.identifiers if decision.allow else {},
        reasons=reasons,
        override=decision.override,
        override_justification=event.sealed_text.get(JUSTIFICATION) if decision.override and event.urgency else None,
        override_role=event.urgency.declared_by_role if decision.override and event.urgency else None,
        policy_revision=decision.revision,
        subject_token=event.subject_key,
        decided_at=datetime.now(UTC),
        replay_proof=replay_proof if view_failed is not None else None,
    )
