"""An unexpected error in an agent, for a batch it has taken (a bug, say), stops the worker
rather than letting Faust restart the agent past that batch: Faust's commit steps over a
one-offset gap (it takes it for a transaction marker), so a failed one-event batch was lost for
good, and a larger one stalled every later commit. Restarted, the worker shares the batch.
(Named zz: it replaces the session's worker.)"""

from __future__ import annotations

import os
import uuid

from bus.demo import stop_worker
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus

SHIM = REPO / "tests" / "fault_shim"


def test_an_unexpected_agent_error_stops_the_worker_and_the_restarted_worker_shares_the_batch(bus: Bus) -> None:
    s = Synth(seed=uuid.uuid4().int % 2**31)
    poisoned = s.child_protection_plan(s.child())
    if bus.worker is not None:
        stop_worker(bus.worker)
    saved = bus.worker_env
    bus.worker_env = {**(saved or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(SHIM),
                                                                                  os.environ.get("PYTHONPATH")])),
                      "SGBUS_TEST_FAULT_ROUTE_EVENT_IDS": poisoned["event_id"]}
    try:
        bus.start_worker()
        worker = bus.worker
        assert worker is not None
        bus.publish([poisoned])
        wait_for(lambda: worker.poll() is not None, 120, interval_s=0.5, what="the worker to stop on the agent's error")
        assert worker.returncode != 0  # stopped as failed, for its supervisor (systemd, Kubernetes) to restart
        assert not [r for r in bus.audit_records(timeout_s=1.5) if r["event_id"] == poisoned["event_id"]]
    finally:
        bus.worker_env = saved
    bus.start_worker()  # the bug fixed (here: the fault no longer injected)
    records = bus.audits_for({poisoned["event_id"]}, 1, timeout_s=180)
    assert records and all(r["event_id"] == poisoned["event_id"] for r in records)
