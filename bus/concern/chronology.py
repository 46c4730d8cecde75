"""`sgbus chronology`: one child's cross-agency timeline, from what the MASH itself was sent."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from bus.exceptions import ConfigurationError
from bus.kafka_io import read_topic
from bus.policy.data import Partner, Partnership, catalogue
from bus.records import DeliveredEvent
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import partner_group_prefix
from bus.topics import deliver_topic


@dataclass(frozen=True)
class Entry:
    event_id: str
    at: str
    event_type: str
    source: str
    agreement: str
    summary: str


def mash_partner(partnership: Partnership, partner_id: str | None) -> Partner:
    """The partner asking: it must be a recipient of the multi-agency concern by agreement (the
    MASH), so the token it holds is the one the timeline is keyed by; nobody else may ask."""
    if partnership.concern is None:
        raise ConfigurationError("the partnership has no multi-agency concern (policies/data/concern.yaml)")
    recipients = [r for a in partnership.agreements if "bus.multi_agency_concern.v1" in a.event_types
                  for r in a.recipients]
    if not recipients:
        raise ConfigurationError("no agreement sends the multi-agency concern to anyone")
    chosen = partner_id or recipients[0]
    partner = partnership.partner(chosen)
    if partner is None:
        raise ConfigurationError(f"unknown partner {chosen}")
    if chosen not in recipients:
        raise ConfigurationError(f"{chosen} does not receive the multi-agency concern: the chronology is for "
                                 "the MASH only")
    return partner


def _summary(event: DeliveredEvent) -> str:
    p = event.payload
    if event.event_type.startswith("bus.multi_agency_concern"):
        reports = ", ".join(f"{r['event_type']} x{r['count']}" for r in p.get("reports", []))
        return f"CONCERN {p.get('rule')} (raised {p.get('raised')}): {reports}"
    # A timeline, not the record: structured fields only (free text stays in the delivered event).
    free = set(catalogue().get(event.event_type, {}).get("free_text", []))
    shown = [k for k in sorted(p) if k not in free and not isinstance(p[k], (dict, list)) and p[k] is not None][:4]
    return "; ".join(f"{k}={p[k]}" for k in shown)


def timeline(access: KafkaAccess, partner: Partner, token: str, timeout_s: float = 20.0) -> list[Entry]:
    """Every delivery to `partner` whose subject carries `token`, oldest first (read with the
    partner's own principal: exactly what it was entitled to receive)."""
    values = read_topic(access, deliver_topic(partner.id), timeout_s=timeout_s, to_end=True,
                        group=partner_group_prefix(partner.id) + "chronology")
    entries = []
    for raw in values:
        try:
            event = DeliveredEvent.model_validate_json(raw)
        except ValidationError:
            continue
        if token not in event.subject.identifiers.values():
            continue
        entries.append(Entry(str(event.event_id), event.occurred_at.isoformat(), event.event_type,
                             f"{event.source.agency.value}/{event.source.org_id}", event.sharing.agreement,
                             _summary(event)))
    return sorted(entries, key=lambda e: e.at)


def render(entries: list[Entry], partner: Partner) -> list[str]:
    if not entries:
        return [f"nothing delivered to {partner.id} about this token"]
    agencies = sorted({e.source.split("/")[0] for e in entries if not e.source.startswith("bus/")})
    lines = [f"chronology as {partner.id} received it: {len(entries)} event(s) from {len(agencies)} "
             f"agenc{'y' if len(agencies) == 1 else 'ies'} ({', '.join(agencies)})"]
    lines += [f"  {e.at[:16].replace('T', ' ')}  {e.event_type:<42} {e.source:<18} {e.agreement:<12} {e.summary}"
              for e in entries]
    return lines


def as_json(entries: list[Entry]) -> str:
    return json.dumps([e.__dict__ for e in entries], indent=2)
