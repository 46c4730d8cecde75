"""Crash safety: 10,000 events, the worker SIGKILLed mid-stream and restarted.

Processing is at-least-once, so after the crash the partner topics and sg.audit may hold a
repeat of the batch in flight. What must hold, and is checked here: nothing is lost; the
audit store keeps exactly one decision per (event, candidate recipient); and the partner's
system, through the delivery connector's dedupe on event id, receives each entitled event
exactly once. (Named zz so it runs last: it replaces the session's worker.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from bus.security.principals import delivery_name
from bus.topics import deliver_topic
from connectors.delivery.base import run_delivery
from connectors.delivery.filedrop import FileDropSink
from tests.helpers import wait_for
from tests.integration.conftest import Bus
from tests.integration.crash_sample import allowed_by_recipient, crash_sample, stored_pairs


def test_sigkill_mid_stream_loses_nothing_and_partners_get_each_event_once(bus: Bus, tmp_path: Path) -> None:
    events, ids, expected_pairs = crash_sample(seed=1001)
    db = bus.settings.audit_db_path

    bus.publish(events)
    wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) // 5, 300, interval_s=0.5,
             what="a fifth of the decisions before the crash")
    bus.kill_worker()
    at_crash = len(stored_pairs(db, ids))
    assert at_crash < len(expected_pairs), "the crash came too late to test anything"
    bus.start_worker()

    stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                      600, interval_s=1.0, what="every decision after the restart")
    pairs = Counter((e, r) for e, r, _ in stored)
    assert set(pairs) == expected_pairs and max(pairs.values()) == 1  # one decision per (event, candidate)

    allowed = allowed_by_recipient(stored)
    assert allowed, "the sample should share something"
    for partner, expected in allowed.items():
        topic_ids = [json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner))]
        ours = [e for e in topic_ids if e in ids]
        assert set(ours) == expected, partner  # nothing lost (repeats possible: at-least-once)

    busiest = max(allowed, key=lambda p: len(allowed[p]))
    drop = tmp_path / "drop"
    run_delivery(access=bus.access(delivery_name(busiest)),
                 partner=busiest, sink=FileDropSink(drop, busiest, name="crash-drop"),
                 state_dir=tmp_path, idle_timeout_s=5)
    delivered = [json.loads(line)["event_id"] for f in drop.glob("*.jsonl") for line in f.read_text().splitlines()]
    ours = Counter(e for e in delivered if e in ids)
    assert set(ours) == allowed[busiest] and max(ours.values()) == 1  # exactly once at the partner's system
