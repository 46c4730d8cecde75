"""One child's picture: which agency reported which kind of event when, over the rolling window (pure)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.concern.rules import Concern

DAY_S = 86400
#: reports kept per child (the oldest go first): bounds the table entry, the changelog message
#: and the OPA input whatever one partner publishes about one child
MAX_REPORTS = 500
#: concern event ids are derived, so the same raise emitted twice (a replayed batch) is one event
_CONCERN_NS = uuid.UUID("6f1d2c1e-3b7a-5c2e-9a44-0d6f3e8b9c10")


@dataclass(frozen=True)
class Report:
    ingest_id: str
    agency: str
    event_type: str  # without its version
    at: int  # unix seconds (occurred_at)


@dataclass
class Picture:
    """What the table holds per child (MASH-domain token): reports within the longest window and,
    per rule, what the picture was when a concern was last raised."""

    reports: list[Report] = field(default_factory=list)
    #: per rule: the picture at the last raise, `active` while the child stays over the threshold,
    #: and `raised`, a count that never goes back (it is part of the concern's event id)
    raised: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, report: Report) -> bool:
        """Add a report once (a replayed event changes nothing); False if already there."""
        if any(r.ingest_id == report.ingest_id for r in self.reports):
            return False
        self.reports.append(report)
        self.reports.sort(key=lambda r: (r.at, r.ingest_id))
        del self.reports[:-MAX_REPORTS]
        return True

    def rearm(self, rule_id: str) -> None:
        """Below the threshold again: the next crossing raises anew (with the next count)."""
        if rule_id in self.raised:
            self.raised[rule_id]["active"] = False

    def prune(self, now: int, window_days: int) -> None:
        self.reports = [r for r in self.reports if now - r.at <= window_days * DAY_S]

    def opa_child(self, key: str, now: int) -> dict[str, Any]:
        active = {rule: {k: v[k] for k in ("agencies", "event_types", "events")}
                  for rule, v in self.raised.items() if v.get("active", True)}
        return {"key": key, "now": now, "raised": active,
                "events": [{"agency": r.agency, "event_type": r.event_type, "at": r.at} for r in self.reports]}

    def in_window(self, now: int, window_days: int) -> list[Report]:
        return [r for r in self.reports if 0 <= now - r.at <= window_days * DAY_S]

    #: the sg.events partition of the child's events, which is the changelog partition the picture is
    #: written to (so a periodic sweep can write it back, or delete it, where it belongs)
    partition: int | None = None

    @property
    def empty(self) -> bool:
        """Nothing within the window: the picture (and what was raised from it) is let go."""
        return not self.reports

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"reports": [[r.ingest_id, r.agency, r.event_type, r.at] for r in self.reports],
                               "raised": self.raised}
        if self.partition is not None:
            doc["p"] = self.partition
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str | None) -> Picture:
        if not raw:
            return cls()
        doc = json.loads(raw)
        partition = doc.get("p")
        return cls([Report(*r) for r in doc.get("reports", [])], dict(doc.get("raised", {})),
                   partition if isinstance(partition, int) else None)


def raise_payload(picture: Picture, rule_id: str, window_days: int, now: int) -> dict[str, Any] | None:
    """The bus.multi_agency_concern.v1 payload: counts and first/last dates per event type (None
    when no report is in the window: nothing to raise)."""
    reports = picture.in_window(now, window_days)
    if not reports:
        return None
    by_type: dict[tuple[str, str], list[int]] = {}
    for r in reports:
        by_type.setdefault((r.event_type, r.agency), []).append(r.at)
    previous = picture.raised.get(rule_id, {})
    return {
        "rule": rule_id,
        "window_days": window_days,
        "agencies": sorted({r.agency for r in reports}),
        "reports": [{"event_type": t, "agency": a, "count": len(ats), "first_at": _iso(min(ats)),
                     "last_at": _iso(max(ats))} for (t, a), ats in sorted(by_type.items())],
        "events_in_window": len(reports),
        "first_at": _iso(min(r.at for r in reports)),
        "last_at": _iso(max(r.at for r in reports)),
        "raised": int(previous.get("raised", 0)) + 1,
    }


def remember_raise(picture: Picture, rule_id: str, payload: dict[str, Any]) -> None:
    picture.raised[rule_id] = {
        "agencies": payload["agencies"],
        "event_types": sorted({r["event_type"] for r in payload["reports"]}),
        "events": payload["events_in_window"],
        "raised": payload["raised"],
        "active": True,
    }


def concern_event_id(key: str, rule_id: str, raised: int, first_at: str) -> str:
    """Derived from the picture, so a replayed batch raises the very same event. The window's first
    report is in it because the raise count starts again once a picture is let go (nothing left in
    its window): a later crossing must not reuse an id the bus has already taken for other content."""
    return str(uuid.uuid5(_CONCERN_NS, f"{key}/{rule_id}/{raised}/{first_at}"))


def sweep(pictures: dict[str, str], now: int, window_days: int) -> tuple[dict[str, Picture], int]:
    """The pictures that change when pruned to the window now (an empty one is to be deleted,
    with its raise history, so that no child's picture outlives the window for want of a new
    event about them), and how many could not be read (left as they are)."""
    changed: dict[str, Picture] = {}
    unreadable = 0
    for key, text in pictures.items():
        try:
            picture = Picture.from_bytes(text)
        except (ValueError, TypeError, KeyError, AttributeError):
            unreadable += 1
            continue
        before = len(picture.reports)
        picture.prune(now, window_days)
        if picture.empty or len(picture.reports) != before:
            changed[key] = picture
    return changed, unreadable


def rules_window(concern: Concern) -> int:
    return concern.window_days


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
