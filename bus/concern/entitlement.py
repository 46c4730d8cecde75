"""Which reports a concern may count: only what every concern recipient may hear of (pure; the
concern stage and `sgbus policy simulate` decide it alike)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from bus.policy.today import uk_today

if TYPE_CHECKING:
    from bus.policy.data import Partnership

CONCERN_TYPE = "bus.multi_agency_concern.v1"


def concern_recipients(partnership: Partnership, today: date | None = None) -> set[str]:
    """The partners an agreement in force today sends the concern to (one that has ended, or not
    begun, sends nothing, so its recipients must not hold back what the others may hear of)."""
    today = today or uk_today()
    return {r for a in partnership.agreements
            if CONCERN_TYPE in a.event_types and a.valid_from <= today and (a.valid_to is None or today <= a.valid_to)
            for r in a.recipients}


def own_sources(partnership: Partnership, recipients: set[str]) -> dict[str, tuple[str, str]]:
    """Each recipient's own (agency, org_id): its own events count without a share."""
    return {p.id: (p.agency.value, p.org_id) for p in partnership.partners if p.id in recipients}


def may_count(source: tuple[str, str], allowed: set[str], recipients: set[str],
              own: dict[str, tuple[str, str]]) -> bool:
    """One concern goes to every recipient, so a report counts only if each may hear of it: it is
    the recipient's own, or policy sends it to them (`allowed`). Nothing counts without a recipient."""
    return bool(recipients) and all(r in allowed or own.get(r) == source for r in recipients)
