"""Subscriptions -> candidate recipients of an event (policy then decides each one)."""

from __future__ import annotations

from dataclasses import dataclass

from bus.policy.data import Partnership


@dataclass(frozen=True)
class Candidate:
    recipient: str
    purpose: str


def candidates(partnership: Partnership, event_type: str, source_agency: str, source_org: str) -> list[Candidate]:
    """Every subscriber to `event_type` except the publisher itself, once per partner."""
    publisher = partnership.partner_for_source(source_agency, source_org)
    seen: set[str] = set()
    found: list[Candidate] = []
    for sub in partnership.subscriptions:
        if event_type not in sub.event_types or sub.partner in seen:
            continue
        if publisher is not None and sub.partner == publisher.id:
            continue
        seen.add(sub.partner)
        found.append(Candidate(sub.partner, sub.purpose))
    return found
