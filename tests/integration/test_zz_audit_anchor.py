"""An insider with the audit database alone cuts the chain back: the audit stage signs nothing over
it, whether it was running or restarted (SGBUS_AUDIT_ANCHOR=published), so the published heads
keep contradicting the cut. On a stack of its own: the session's broker carries other chains'
heads on sg.audit.heads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.audit.chain import AuditStore, verify
from bus.audit.heads import latest_head
from bus.audit.signer import load_verifier, public_keys_path
from bus.demo import start_worker, stop_worker
from bus.pseudonymise.keyring import init_keyring
from bus.settings import Settings
from bus.stack import Stack
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus
from tests.integration.crash_sample import crash_sample, stored_pairs

REFUSED = "no longer holds its published head"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    home = tmp_path_factory.mktemp("sgbus-anchor")
    stack = Stack(home, REPO / "policies")
    try:
        status, _ = stack.up(monitoring=False)
        settings = Settings(home=home, policies_dir=REPO / "policies")
        init_keyring(settings.keyring_path)
        yield Bus(stack, settings, status["kafka_bootstrap"], status["opa_url"], "", home / "worker.log")
    finally:
        stack.down()


def _sample(seed: int) -> tuple[list[dict[str, Any]], set[str], int]:
    """30 events every one of which is routed to someone, and how many decisions they make."""
    events, ids, pairs = crash_sample(seed, count=30)
    return events, ids, len(pairs)


def test_a_chain_cut_back_in_the_database_is_never_signed_anew(own_stack: Bus, tmp_path: Path) -> None:
    bus, db = own_stack, own_stack.settings.audit_db_path
    env = {"SGBUS_METRICS_PORT": "0", "SGBUS_RETRY_MAX_BACKOFF_S": "1.0"}
    published = {**env, "SGBUS_AUDIT_ANCHOR": "published"}
    first, first_ids, first_n = _sample(7001)
    worker = start_worker(bus.settings, tmp_path / "first.log", env=env)
    try:
        bus.publish(first)
        wait_for(lambda: len(stored_pairs(db, first_ids)) >= first_n, 180, what="the first events' decisions")
    finally:
        stop_worker(worker)
    # Restarted with the published head as its anchor: the store holds it, so sharing goes on.
    second, second_ids, second_n = _sample(7002)
    log = tmp_path / "second.log"
    worker = start_worker(bus.settings, log, env=published)
    try:
        bus.publish(second)
        wait_for(lambda: len(stored_pairs(db, second_ids)) >= second_n, 180, what="the second events' decisions")
        assert "audit_anchor_read" in log.read_text()
        # The insider cuts the newest records and their checkpoints while the stage runs.
        with sqlite3.connect(db) as con:
            (top,) = con.execute("SELECT MAX(seq) FROM audit").fetchone()
            con.execute("DELETE FROM audit WHERE seq > ?", (top - 5,))
            con.execute("DELETE FROM checkpoints WHERE seq > ?", (top - 5,))
        third, third_ids, _ = _sample(7003)
        bus.publish(third)
        wait_for(lambda: REFUSED in log.read_text(), 120, what="the running stage refusing to sign")
        assert stored_pairs(db, third_ids) == []
    finally:
        stop_worker(worker)
    # Restarted: it reads the head it published from sg.audit.heads, and still signs nothing.
    log = tmp_path / "third.log"
    worker = start_worker(bus.settings, log, env=published)
    try:
        wait_for(lambda: REFUSED in log.read_text(), 120, what="the restarted stage refusing to sign")
        assert stored_pairs(db, third_ids) == []
    finally:
        stop_worker(worker)
    head = latest_head(bus.admin, verifier=load_verifier(public_keys_path(bus.settings.home)))
    result = verify(AuditStore(db), load_verifier(public_keys_path(bus.settings.home)), head)
    assert head is not None and head.seq == top and not result.ok  # the cut stays visible
