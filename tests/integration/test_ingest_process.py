"""SGBUS_INGEST_PROCESS=true: the all-in-one worker prepares its ingest batches in a second
process, pipelined with routing; SGBUS_AUDIT_PROCESS=true: it stores its audit batches in a
third. The same decisions and copies as in one process; a killed helper process loses
nothing (and the audit stores nothing twice); a killed worker leaves no helper behind."""

from __future__ import annotations

import copy
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.audit.chain import AuditStore, verify
from bus.audit.signer import load_verifier, public_keys_path
from bus.demo import stop_worker
from bus.policy.data import load_partnership
from bus.routing import candidates
from bus.topics import deliver_topic
from schemas.synthetic import Synth
from tests.helpers import helper_children, ingest_children, wait_for
from tests.integration.conftest import REPO, Bus
from tests.integration.crash_sample import allowed_by_recipient, crash_sample, stored_pairs

_HELPERS = ("SGBUS_INGEST_PROCESS", "SGBUS_AUDIT_PROCESS")


def _restart(bus: Bus, ingest_process: str | None, audit_process: str | None = None) -> None:
    """The session's worker again, with SGBUS_INGEST_PROCESS and SGBUS_AUDIT_PROCESS set (None:
    the default), once it has routed a canary (the next test may read its metrics at once).
    Nothing to do when the running worker has those settings already (each restart loads the
    redaction model again)."""
    wanted = {k: v for k, v in zip(_HELPERS, (ingest_process, audit_process), strict=True) if v is not None}
    running = bus.worker is not None and bus.worker.poll() is None
    if running and {k: v for k, v in (bus.worker_env or {}).items() if k in _HELPERS} == wanted:
        return
    if bus.worker is not None:
        stop_worker(bus.worker)
    bus.worker_env = {k: v for k, v in (bus.worker_env or {}).items() if k not in _HELPERS} | wanted
    bus.start_worker()
    s = Synth(seed=uuid.uuid4().int % 2**31)
    canary = s.child_protection_plan(s.child())
    bus.publish([canary])
    bus.audits_for({canary["event_id"]}, 1, timeout_s=180)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: what an audit record decides about its event, not when or under which ids
_DECIDED = ("recipient", "decision", "agreement", "lawful_basis", "purpose", "fields_shared", "free_text_modes",
            "identifier_modes", "reasons", "override", "subject_token")


def _burst(seed: int, count: int = 1500) -> tuple[list[dict[str, Any]], set[str], set[tuple[str, str]]]:
    """The first `count` events of a crash sample, their ids and their (event, candidate) pairs."""
    events, _, pairs = crash_sample(seed=seed)
    events = events[:count]
    ids = {e["event_id"] for e in events}
    return events, ids, {(e, r) for e, r in pairs if e in ids}


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


@pytest.fixture(scope="module", autouse=True)
def default_worker_after(bus: Bus) -> Iterator[None]:
    """The tests below leave the worker with its second process for the next; the rest of the
    session runs the default worker again."""
    yield
    _restart(bus, None)


@pytest.fixture
def in_second_process(bus: Bus) -> Bus:
    _restart(bus, "true", "true")
    return bus


def test_helper_processes_give_the_same_decisions_and_copies(bus: Bus) -> None:
    events, expected = _sample(1919, 120)
    twins = [{**copy.deepcopy(e), "event_id": str(uuid.uuid4())} for e in events]  # re-signed as published
    # The reference first: everything in the worker's own process (the default, unless the
    # shell running the tests turned it on).
    _restart(bus, *(None if os.environ.get(k, "false").lower() in {"false", "0"} else "false" for k in _HELPERS))
    assert bus.worker is not None and not helper_children(bus.worker.pid, "sgbus-ingest")
    assert not helper_children(bus.worker.pid, "sgbus-audit")
    bus.publish(events)
    reference = _decisions(bus, events, expected)
    _restart(bus, "true", "true")
    pid = bus.worker.pid if bus.worker else 0
    children = [wait_for(lambda n=name: helper_children(pid, n), 60, what=f"the worker's {name} process")[0]
                for name in ("sgbus-ingest", "sgbus-audit")]
    busy_before = [_cpu_s(child) for child in children]
    bus.publish(twins)
    prepared = _decisions(bus, twins, expected)
    # The twins were prepared and stored there (an idle helper uses next to no CPU).
    used = [_cpu_s(child) - before for child, before in zip(children, busy_before, strict=True)]
    assert used[0] > 0.05 and used[1] > 0.01, used
    assert all(reference) and prepared == reference
    allowed = {json.loads(d)["recipient"] for ds in reference for d in ds if json.loads(d)["decision"] == "allow"}
    assert len(allowed) >= 3
    for partner in allowed:  # each partner got an event's twin exactly when it got the event
        got = {json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner))}
        assert [e["event_id"] in got for e in events] == [t["event_id"] in got for t in twins], partner


@pytest.mark.parametrize(("helper", "seed"), [("ingest", 4004), ("audit", 6006)])
def test_a_killed_helper_process_is_replaced_and_nothing_is_lost_or_stored_twice(
        in_second_process: Bus, helper: str, seed: int) -> None:
    bus = in_second_process
    events, ids, expected_pairs = _burst(seed=seed)
    db = bus.settings.audit_db_path
    assert bus.worker is not None
    worker = bus.worker.pid
    first = wait_for(lambda: helper_children(worker, f"sgbus-{helper}"), 60, what=f"the worker's {helper} process")
    bus.publish(events)
    wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) // 10, 300, interval_s=0.2,
             what="a tenth of the decisions before the kill")
    os.kill(first[0], signal.SIGKILL)
    assert len(stored_pairs(db, ids)) < len(expected_pairs), "the kill came too late to test anything"
    stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                      300, interval_s=1.0, what="every decision after the kill")
    assert {(e, r) for e, r, _ in stored} == expected_pairs
    assert len(stored) == len(expected_pairs), "a decision was stored twice"
    assert bus.worker.poll() is None, "the worker itself kept going"
    replaced = helper_children(worker, f"sgbus-{helper}")
    assert replaced and first[0] not in replaced
    assert f"{helper}_process_failed_holding_batch" in bus.worker_log.read_text()
    checked = verify(AuditStore(db), load_verifier(public_keys_path(bus.settings.home)))
    assert checked.ok, checked.problem


def test_a_worker_killed_mid_stream_loses_nothing_and_leaves_no_helper_process_behind(
        in_second_process: Bus) -> None:
    """Batches are acked only once finished, though the next is taken (and prepared) before:
    after a SIGKILL mid-stream and a restart, every decision and every allowed copy is there."""
    bus = in_second_process
    events, ids, expected_pairs = _burst(seed=5005)
    db = bus.settings.audit_db_path
    assert bus.worker is not None
    worker = bus.worker.pid
    children = [*wait_for(lambda: ingest_children(worker), 60, what="the worker's ingest process"),
                *wait_for(lambda: helper_children(worker, "sgbus-audit"), 60, what="the worker's audit process")]
    bus.publish(events)
    wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) // 5, 300, interval_s=0.2,
             what="a fifth of the decisions before the crash")
    bus.kill_worker()
    assert len(stored_pairs(db, ids)) < len(expected_pairs), "the crash came too late to test anything"
    wait_for(lambda: not any(_alive(pid) for pid in children), 15, interval_s=0.2,
             what="the helper processes to leave with their worker")
    bus.start_worker()
    stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                      300, interval_s=1.0, what="every decision after the restart")
    assert {(e, r) for e, r, _ in stored} == expected_pairs
    for partner, expected in allowed_by_recipient(stored).items():
        got = {json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner))}
        assert expected <= got, partner  # nothing lost (repeats possible: at-least-once)
