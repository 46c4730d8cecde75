"""SGBUS_INGEST_PROCESS: the all-in-one worker prepares its ingest batches in a second process,
pipelined with routing. The same decisions and copies as in-process; a killed second process
loses nothing; a killed worker leaves no second process behind."""

from __future__ import annotations

import copy
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.demo import stop_worker
from bus.policy.data import load_partnership
from bus.routing import candidates
from bus.topics import deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus
from tests.integration.crash_sample import crash_sample, stored_pairs

IN_PROCESS = "false"


def _restart(bus: Bus, ingest_process: str) -> None:
    if bus.worker is not None:
        stop_worker(bus.worker)
    bus.worker_env = {**(bus.worker_env or {}), "SGBUS_INGEST_PROCESS": ingest_process}
    bus.start_worker()


def _prepared_by(worker_pid: int) -> list[int]:
    """The worker's ingest process(es): children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == worker_pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: what an audit record decides about its event, not when or under which ids
_DECIDED = ("recipient", "decision", "agreement", "lawful_basis", "purpose", "fields_shared", "free_text_modes",
            "identifier_modes", "reasons", "override", "subject_token")


def _sample(seed: int, count: int) -> tuple[list[dict[str, Any]], int]:
    """`count` events of the subscribed types and how many audit records they make."""
    partnership = load_partnership(REPO / "policies" / "data")
    subscribed = sorted({t for sub in partnership.subscriptions for t in sub.event_types if not t.startswith("bus.")})
    synth = Synth(seed=seed)
    events = [synth.event(subscribed[i % len(subscribed)]) for i in range(count)]
    pairs = sum(len(candidates(partnership, e["event_type"], e["source"]["agency"], e["source"]["org_id"]))
                for e in events)
    return events, pairs


def _decisions(bus: Bus, events: list[dict[str, Any]], expected: int) -> list[list[str]]:
    """Per event, in order: what each of its audit records decided."""
    found = bus.audits_for({e["event_id"] for e in events}, expected, timeout_s=180)
    by_event: dict[str, set[str]] = {}
    for r in found:
        decided = {k: r.get(k) for k in _DECIDED}
        if not str(decided["subject_token"]).startswith("psn:"):
            decided["subject_token"] = "per event"  # a child without identifiers: a token of the event's own
        by_event.setdefault(r["event_id"], set()).add(json.dumps(decided, sort_keys=True))
    return [sorted(by_event.get(e["event_id"], ())) for e in events]


@pytest.fixture(scope="module")
def in_second_process(bus: Bus) -> Iterator[Bus]:
    _restart(bus, "true")
    try:
        yield bus
    finally:
        _restart(bus, IN_PROCESS)  # the rest of the session runs the default worker


def test_a_second_ingest_process_gives_the_same_decisions_and_copies(bus: Bus) -> None:
    # The reference first, from the session's default worker (ingest in its own process).
    events, expected = _sample(1919, 120)
    twins = [{**copy.deepcopy(e), "event_id": str(uuid.uuid4())} for e in events]  # re-signed as published
    bus.publish(events)
    reference = _decisions(bus, events, expected)
    _restart(bus, "true")
    try:
        pid = bus.worker.pid if bus.worker else 0
        wait_for(lambda: _prepared_by(pid), 60, what="the worker's ingest process")
        bus.publish(twins)
        prepared = _decisions(bus, twins, expected)
    finally:
        _restart(bus, IN_PROCESS)
    assert all(reference) and prepared == reference
    allowed = {json.loads(d)["recipient"] for ds in reference for d in ds if json.loads(d)["decision"] == "allow"}
    assert len(allowed) >= 3
    for partner in allowed:  # each partner got an event's twin exactly when it got the event
        got = {json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner))}
        assert [e["event_id"] in got for e in events] == [t["event_id"] in got for t in twins], partner


def test_a_killed_ingest_process_is_replaced_and_nothing_is_lost(in_second_process: Bus) -> None:
    bus = in_second_process
    events, ids, expected_pairs = crash_sample(seed=2002)
    events = events[:3000]
    ids = {e["event_id"] for e in events}
    expected_pairs = {(e, r) for e, r in expected_pairs if e in ids}
    db = bus.settings.audit_db_path
    assert bus.worker is not None
    worker = bus.worker.pid
    first = wait_for(lambda: _prepared_by(worker), 60, what="the worker's ingest process")
    bus.publish(events)
    wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) // 10, 300, interval_s=0.2,
             what="a tenth of the decisions before the kill")
    os.kill(first[0], signal.SIGKILL)
    assert len(stored_pairs(db, ids)) < len(expected_pairs), "the kill came too late to test anything"
    stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                      300, interval_s=1.0, what="every decision after the kill")
    pairs = Counter((e, r) for e, r, _ in stored)
    assert set(pairs) == expected_pairs and max(pairs.values()) == 1
    assert bus.worker.poll() is None, "the worker itself kept going"
    replaced = _prepared_by(worker)
    assert replaced and first[0] not in replaced
    assert "ingest_process_failed_holding_batch" in bus.worker_log.read_text()


def test_a_killed_worker_leaves_no_ingest_process_behind(in_second_process: Bus) -> None:
    bus = in_second_process
    assert bus.worker is not None
    children = wait_for(lambda: _prepared_by(bus.worker.pid if bus.worker else 0), 60,
                        what="the worker's ingest process")
    bus.kill_worker()
    wait_for(lambda: not any(_alive(pid) for pid in children), 15, interval_s=0.2,
             what="the ingest process to leave with its worker")
    bus.start_worker()  # the fixture's teardown restarts the default one
