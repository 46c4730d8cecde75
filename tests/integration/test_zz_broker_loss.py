"""Broker loss on a three-node KRaft cluster (`sgbus stack up --brokers 3`, a stack of its own):
10,000 events through the exactly-once stage workers; mid-stream the leader of an sg.events
partition is SIGKILLed and later restarted, then the active controller is (the second half of
the events is published while it is down). Afterwards every
partner topic holds exactly the entitled event ids as read_committed consumers see them, none
missing, none twice; the audit store holds one decision per (event, candidate) and its chain
verifies against the published heads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.agents.pipeline import EXACTLY_ONCE_STAGES
from bus.demo import start_worker, stop_worker
from bus.pseudonymise.keyring import init_keyring
from bus.settings import Settings
from bus.stack import Stack
from bus.topics import EVENTS, deliver_topic
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus
from tests.integration.crash_sample import allowed_by_recipient, crash_sample, stored_pairs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    home = tmp_path_factory.mktemp("sgbus-cluster")
    stack = Stack(home, REPO / "policies", brokers=3)
    try:
        status, _ = stack.up(monitoring=False)
        assert len(status["kafka_bootstrap"].split(",")) == 3
        settings = Settings(home=home, policies_dir=REPO / "policies")
        init_keyring(settings.keyring_path)
        yield Bus(stack, settings, status["kafka_bootstrap"], status["opa_url"], "", home / "worker.log")
    finally:
        stack.down()
        assert not any(n["alive"] for n in stack.status()["kafka_nodes"])


def test_losing_a_partition_leader_then_the_active_controller_loses_and_repeats_nothing(
    cluster: Bus, tmp_path: Path,
) -> None:
    events, ids, expected_pairs = crash_sample(seed=3003)
    db = tmp_path / "audit.db"
    env = {"SGBUS_AUDIT_DB": str(db), "SGBUS_METRICS_PORT": "0", "SGBUS_RETRY_MAX_BACKOFF_S": "1.0"}
    procs = [start_worker(cluster.settings, tmp_path / f"{stage}.log", env=env, stage=stage)
             for stage in EXACTLY_ONCE_STAGES]
    stack = cluster.stack

    def decided(fraction: float, what: str) -> None:
        wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) * fraction, 400, interval_s=0.5,
                 what=what)

    try:
        # The second half is published only after the second loss: the stream is certain to be
        # still flowing when each node goes, however fast the first half is shared.
        first, second = events[: len(events) // 2], events[len(events) // 2:]
        cluster.publish(first)
        decided(0.2, "a fifth of the decisions")
        leader = stack.partition_leader(EVENTS, 0)
        stack.kill_kafka_node(leader)
        assert len(stored_pairs(db, ids)) < len(expected_pairs) // 2, "the loss came too late to test anything"
        decided(0.35, "sharing going on with two nodes of three")  # min.insync.replicas 2 still met
        stack.start_kafka_node(leader)
        controller = wait_for(stack.active_controller, 60, what="the active controller")
        stack.kill_kafka_node(controller)
        cluster.publish(second)  # published and shared while the old controller is down
        decided(0.6, "sharing going on without the old controller")
        stack.start_kafka_node(controller)

        stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                          600, interval_s=1.0, what="every decision")
        assert all(p.poll() is None for p in procs), "a stage worker died while a broker was down"
        pairs = Counter((e, r) for e, r, _ in stored)
        assert set(pairs) == expected_pairs and max(pairs.values()) == 1

        allowed = allowed_by_recipient(stored)
        assert allowed, "the sample should share something"
        for partner, expected in allowed.items():
            on_topic = Counter(e for e in (json.loads(v)["event_id"]
                                           for v in cluster.raw_values(deliver_topic(partner))) if e in ids)
            assert set(on_topic) == expected, partner  # nothing lost, nothing extra
            assert max(on_topic.values()) == 1, partner  # nothing twice (read_committed)

        run_env = {**os.environ, "SGBUS_HOME": str(cluster.settings.home), "SGBUS_AUDIT_DB": str(db),
                   "SGBUS_POLICIES_DIR": str(cluster.settings.policies_dir)}
        verified = subprocess.run([sys.executable, "-m", "bus", "audit", "verify"], capture_output=True, text=True,
                                  env=run_env, timeout=300, check=False)
        assert verified.returncode == 0, verified.stderr
        assert "audit OK" in verified.stdout
    finally:
        for p in procs:
            stop_worker(p)
