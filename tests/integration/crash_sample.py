"""What both crash tests publish and how they read the audit store back."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bus.policy.data import load_partnership
from bus.routing import candidates
from schemas.synthetic import Synth
from tests.integration.conftest import REPO

COUNT = 10_000


def crash_sample(seed: int, count: int = COUNT) -> tuple[list[dict[str, Any]], set[str], set[tuple[str, str]]]:
    """(events, their ids, expected (event id, candidate recipient) pairs): `count` events of the
    subscribed types, so every one is routed."""
    partnership = load_partnership(REPO / "policies" / "data")
    # what partners publish (the bus's own concerns come only from its concern stage)
    subscribed = sorted({t for sub in partnership.subscriptions for t in sub.event_types if not t.startswith("bus.")})
    synth = Synth(seed=seed)
    events = [synth.event(subscribed[i % len(subscribed)]) for i in range(count)]
    expected_pairs = {(e["event_id"], c.recipient) for e in events
                      for c in candidates(partnership, e["event_type"], e["source"]["agency"], e["source"]["org_id"])}
    return events, {e["event_id"] for e in events}, expected_pairs


def stored_pairs(db: Path, ids: set[str]) -> list[tuple[str, str, str]]:
    """(event id, recipient, decision) of every stored audit record about `ids`. The query
    columns, not the bodies: the tests poll this while the workers run, and parsing every body
    of the session's store took a good part of a core from them (`audit verify` checks that
    the columns agree with the signed bodies)."""
    if not db.is_file():
        return []
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT event_id, recipient, decision FROM audit").fetchall()
    finally:
        con.close()
    return [(e, r, d) for e, r, d in rows if e in ids]


def allowed_by_recipient(stored: list[tuple[str, str, str]]) -> dict[str, set[str]]:
    """Recipient -> the event ids the stored decisions allowed it."""
    allowed: dict[str, set[str]] = {}
    for event_id, recipient, decision in stored:
        if decision == "allow":
            allowed.setdefault(recipient, set()).add(event_id)
    return allowed
