"""A worker stops within its grace period on SIGTERM, even when the brokers are gone (it used to
hang for over 50 s in Kafka flushes and commits that could never finish)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bus.demo import start_worker, stop_worker
from bus.pseudonymise.keyring import init_keyring
from bus.security.principals import stage_app_id
from bus.settings import Settings
from bus.stack import Stack
from bus.worker import EXIT_STOP_OVERRAN
from tests.helpers import wait_for
from tests.integration.conftest import REPO

GRACE_S = 5.0


def _group_stable(stack: Stack, group: str) -> bool:
    admin = AdminClient(stack.access().librdkafka(log_level=0))
    try:
        described = admin.describe_consumer_groups([group])[group].result(10)
    except KafkaException:  # the group coordinator is not ready yet
        return False
    return str(described.state).endswith("STABLE") and len(described.members) > 0


def test_a_worker_stops_within_its_grace_period_on_sigterm_after_the_brokers_are_gone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = Stack(home, REPO / "policies")
    stack.up(monitoring=False)
    worker = None
    try:
        settings = Settings(home=home, policies_dir=REPO / "policies")
        init_keyring(settings.keyring_path)
        worker = start_worker(settings, home / "worker.log", env={"SGBUS_SHUTDOWN_GRACE_S": str(GRACE_S)})
        wait_for(lambda: _group_stable(stack, stage_app_id("sgbus", "all")), 120, interval_s=0.5,
                 what="the worker's consumer group to be stable")
        stack.stop_kafka()  # as `sgbus stack down` would, with the worker left running
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(GRACE_S + 10)
        took = time.monotonic() - began
        assert took < GRACE_S + 5, f"stopped after {took:.1f}s"
        assert code in (0, EXIT_STOP_OVERRAN), code
        if code == EXIT_STOP_OVERRAN:
            assert "stop_overran_grace" in (home / "worker.log").read_text()
    finally:
        if worker is not None:
            stop_worker(worker, timeout_s=5)
        stack.down()
