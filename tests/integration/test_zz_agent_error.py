"""An unexpected error in an agent, for a batch it has taken (a bug, say), stops the worker
rather than letting Faust restart the agent past that batch: Faust's commit steps over a
one-offset gap (it takes it for a transaction marker), so a failed one-event batch was lost for
good, and a larger one stalled every later commit. Restarted, the worker shares the batch. The
worker's log names the error's type, never its message: a bug's message can quote the event.
(Named zz: it replaces the session's worker.)"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path

from bus.agents.pipeline import EXACTLY_ONCE_STAGES
from bus.demo import start_worker, stop_worker
from bus.topics import deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus
from tests.integration.crash_sample import allowed_by_recipient, stored_pairs
from tests.integration.test_zz_crash_exactly_once import fresh_stages

SHIM = REPO / "tests" / "fault_shim"


def _with_shim() -> str:
    return os.pathsep.join(filter(None, [str(SHIM), os.environ.get("PYTHONPATH")]))


def test_an_unexpected_agent_error_stops_the_worker_and_the_restarted_worker_shares_the_batch(bus: Bus) -> None:
    s = Synth(seed=uuid.uuid4().int % 2**31)
    poisoned = s.child_protection_plan(s.child())
    if bus.worker is not None:
        stop_worker(bus.worker)
    saved = bus.worker_env
    quote = f"MARKER-{uuid.uuid4().hex}"
    bus.worker_env = {**(saved or {}), "PYTHONPATH": _with_shim(),
                      "SGBUS_TEST_FAULT_ROUTE_EVENT_IDS": poisoned["event_id"], "SGBUS_TEST_FAULT_QUOTE": quote}
    try:
        bus.start_worker()
        worker = bus.worker
        assert worker is not None
        bus.publish([poisoned])
        wait_for(lambda: worker.poll() is not None, 120, interval_s=0.5, what="the worker to stop on the agent's error")
        assert worker.returncode != 0  # stopped as failed, for its supervisor (systemd, Kubernetes) to restart
        assert not [r for r in bus.audit_records(timeout_s=1.5) if r["event_id"] == poisoned["event_id"]]
        logged = bus.worker_log.read_text(errors="replace")
        assert "agent_failed" in logged and "RuntimeError in sgbus.ingest" in logged  # it routes as it ingests
        assert quote not in logged  # the error's message stayed out of the operator's log
    finally:
        bus.worker_env = saved
    bus.start_worker()  # the bug fixed (here: the fault no longer injected)
    records = bus.audits_for({poisoned["event_id"]}, 1, timeout_s=180)
    assert records and all(r["event_id"] == poisoned["event_id"] for r in records)


def test_an_unexpected_error_in_a_stage_worker_stops_it_and_its_restart_shares_the_batch_once(
        bus: Bus, tmp_path: Path) -> None:
    """The same in one process per stage (Kafka transactions), where the agent restarted past the
    batch had the next batch's transaction commit offsets beyond it."""
    s = Synth(seed=uuid.uuid4().int % 2**31)
    poisoned = s.child_protection_plan(s.child())
    env, db = fresh_stages(bus, tmp_path, "agent-error")
    quote = f"MARKER-{uuid.uuid4().hex}"
    faulty = {**env, "PYTHONPATH": _with_shim(), "SGBUS_TEST_FAULT_ROUTE_EVENT_IDS": poisoned["event_id"],
              "SGBUS_TEST_FAULT_QUOTE": quote}
    procs = [start_worker(bus.settings, tmp_path / f"{stage}.log", env=faulty if stage == "route" else env,
                          stage=stage) for stage in EXACTLY_ONCE_STAGES]
    try:
        route = procs[EXACTLY_ONCE_STAGES.index("route")]
        bus.publish([poisoned])
        wait_for(lambda: route.poll() is not None, 180, interval_s=0.5, what="the route stage to stop on the error")
        assert route.returncode != 0
        assert not stored_pairs(db, {poisoned["event_id"]})
        logged = (tmp_path / "route.log").read_text(errors="replace")
        assert "RuntimeError in sgbus.route" in logged and quote not in logged
        procs[EXACTLY_ONCE_STAGES.index("route")] = start_worker(bus.settings, tmp_path / "route.log", env=env,
                                                                 stage="route")
        stored = wait_for(lambda: stored_pairs(db, {poisoned["event_id"]}), 180, interval_s=0.5,
                          what="the batch's decisions after the restart")
        allowed = allowed_by_recipient(stored)
        assert allowed, "the sample should share something"
        for partner, expected in allowed.items():
            on_topic = Counter(e for e in (json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner)))
                               if e == poisoned["event_id"])
            assert set(on_topic) == expected and max(on_topic.values()) == 1, partner  # shared, once
    finally:
        for p in procs:
            stop_worker(p)
        bus.start_worker()
