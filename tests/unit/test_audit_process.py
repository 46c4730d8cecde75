"""The audit agent's store work, in a thread or in the audit process (SGBUS_AUDIT_PROCESS): the
same chain either way; a batch stored again adds nothing; a killed audit process is replaced
and the held batch is stored once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from bus.audit.chain import AuditStore, AuditStoreError, Checkpoint, verify
from bus.audit.signer import AuditSigner, load_signer, load_verifier, new_audit_signer, public_keys_path
from bus.audit_process import (
    Appended,
    AuditProcess,
    AuditProcessFailed,
    AuditWriter,
    _StoreAccess,
    append_messages,
)
from bus.helper_process import HelperClosed, HelperProcess, HelperTaskError, HelperTaskFailed, describe
from bus.metrics import Metrics
from bus.records import encode_audit_batches
from bus.settings import Settings
from tests.helpers import helper_children, wait_for
from tests.unit.test_audit_chain import _record


def _messages(batch: int, records: int = 3) -> list[bytes]:
    return [value for _, value in encode_audit_batches([_record(f"partner-{batch}-{i}", allow=i % 2 == 0)
                                                        for i in range(records)])]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    new_audit_signer(tmp_path)
    return tmp_path


def test_a_batch_is_chained_signed_and_malformed_messages_are_counted(home: Path) -> None:
    store = AuditStore(home / "audit.db")
    done = append_messages(store, load_signer(home), [*_messages(1), b'{"not": "a batch"}', b"\xff"])
    assert (done.added, done.malformed) == (3, 2)
    assert done.checkpoint is not None and done.checkpoint.seq == 3
    assert verify(store, load_verifier(public_keys_path(home)), done.checkpoint).ok


def test_a_batch_stored_again_adds_nothing_and_names_the_latest_head(home: Path) -> None:
    """A batch redelivered after a crash (stored, its head perhaps never published): nothing is
    chained twice, and the store's latest head is published again."""
    store = AuditStore(home / "audit.db")
    signer = load_signer(home)
    messages = _messages(1)
    first = append_messages(store, signer, messages)
    again = append_messages(store, signer, messages)
    assert first.added == 3 and again.added == 0
    assert again.checkpoint is not None and again.checkpoint == first.checkpoint
    assert store.count() == 3
    assert append_messages(store, signer, []).checkpoint is None


def test_the_audit_process_stores_what_a_thread_would_and_is_replaced_when_killed(home: Path) -> None:
    settings = Settings(home=home, audit_db=home / "audit.db")
    helper = AuditProcess(settings)

    async def scenario() -> None:
        helper.start()
        child = wait_for(lambda: helper_children(os.getpid(), "sgbus-audit"), 60, what="the audit process")[0]
        done = await helper.append(_messages(1))
        assert (done.added, done.malformed) == (3, 0) and done.checkpoint is not None
        os.kill(child, signal.SIGKILL)
        held = _messages(2)
        with pytest.raises(AuditProcessFailed):
            await helper.append(held)
        # The held batch again, in a new process: stored once, chained after the first.
        again = await helper.append(held)
        assert again.added == 3 and again.checkpoint is not None and again.checkpoint.seq == 6
        assert child not in helper_children(os.getpid(), "sgbus-audit")
        assert (await helper.append(held)).added == 0

    try:
        asyncio.run(scenario())
    finally:
        helper.close()
    store = AuditStore(home / "audit.db")
    assert store.count() == 6
    assert verify(store, load_verifier(public_keys_path(home)), store.latest_checkpoint()).ok


def test_a_closed_audit_process_takes_no_more_batches_and_is_not_retried(home: Path) -> None:
    helper = AuditProcess(Settings(home=home, audit_db=home / "audit.db"))
    helper.close()
    with pytest.raises(HelperClosed, match="stopping"):
        asyncio.run(helper.append(_messages(1)))
    assert not issubclass(HelperClosed, AuditProcessFailed)  # the writer's retry loop does not take it
    assert not (home / "audit.db").exists()


def test_a_set_up_that_fails_holds_the_batch_and_says_why(tmp_path: Path) -> None:
    """No signing key: the batch is held (as for a stopped process) and the worker hears why, not
    only "the audit process stopped"; put right, the same process sets itself up at the next try."""
    helper = AuditProcess(Settings(home=tmp_path, audit_db=tmp_path / "audit.db"))
    try:
        with pytest.raises(AuditProcessFailed, match=r"could not set itself up \(KeyringError: no audit signing key"):
            asyncio.run(helper.append(_messages(1)))
        new_audit_signer(tmp_path)
        assert asyncio.run(helper.append(_messages(1))).added == 3
    finally:
        helper.close()


def test_a_process_that_cannot_reach_the_store_counts_as_a_store_failure_not_a_lost_process(tmp_path: Path) -> None:
    """With the audit process on, an unreachable store shows as the child's failed set-up: it must
    count where SgbusAuditStoreFailing looks (sgbus_audit_store_failed_total), not as a process
    lost (whose alert's runbook points at memory)."""
    helper = AuditProcess(Settings(home=tmp_path, audit_db=tmp_path / "audit.db"))
    metrics = Metrics()
    writer = AuditWriter(AuditStore(tmp_path / "audit.db"), None, metrics, helper, max_backoff_s=0.1)

    async def scenario() -> Appended:
        task = asyncio.ensure_future(writer.write(_messages(1)))
        for _ in range(600):  # held, and retried: within 30 s
            if _count(metrics, "sgbus_audit_store_failed_total") >= 2:
                break
            assert not task.done()
            await asyncio.sleep(0.05)
        assert _count(metrics, "sgbus_audit_store_failed_total") >= 2
        new_audit_signer(tmp_path)  # put right
        return await asyncio.wait_for(task, 60)

    try:
        assert asyncio.run(scenario()).added == 3
    finally:
        helper.close()
    assert _count(metrics, "sgbus_audit_process_failed_total") == 0


class _Unpicklable(Exception):
    def __init__(self, detail: str, code: int) -> None:  # pickling calls __init__ with args=(message,) only
        super().__init__(f"{detail} {code}")


def _raise_unpicklable() -> None:
    raise _Unpicklable("detail", 1)


def _no_setup() -> None:
    pass


def test_an_error_that_cannot_travel_back_is_named_not_read_as_a_stopped_process() -> None:
    helper = HelperProcess("sgbus-test", _no_setup, (), AuditProcessFailed, "a test helper")
    try:
        with pytest.raises(HelperTaskFailed, match=r"^_Unpicklable$"):
            asyncio.run(helper.run(_raise_unpicklable))
    finally:
        helper.close()


def _raise_with_data() -> None:
    raise ValueError("date of birth 2016-13-40 for Markerina Synthwood is not a date")


def test_an_error_not_sgbus_own_comes_back_named_by_its_type_only() -> None:
    helper = HelperProcess("sgbus-test", _no_setup, (), AuditProcessFailed, "a test helper")
    try:
        with pytest.raises(HelperTaskError) as raised:
            asyncio.run(helper.run(_raise_with_data))
    finally:
        helper.close()
    assert str(raised.value) == "ValueError"  # what it was, not what it said
    assert not isinstance(raised.value, HelperTaskFailed)  # a bug still stops the worker; it is not held


class _Flaky:
    """An audit process that fails once (stops, or its store refuses): before storing the batch,
    or just after its commit."""

    def __init__(self, store: AuditStore, signer: AuditSigner, after_commit: bool, error: Exception) -> None:
        self.store, self.signer, self.after_commit, self.error, self.calls = store, signer, after_commit, error, 0

    async def append(self, values: list[bytes], anchor: Checkpoint | None = None) -> Appended:
        self.calls += 1
        if self.calls == 1:
            if self.after_commit:
                append_messages(self.store, self.signer, values, anchor)
            raise self.error
        return append_messages(self.store, self.signer, values, anchor)


_STOPPED = AuditProcessFailed("the audit process stopped; starting another")


@pytest.mark.parametrize(("after_commit", "error"), [
    (False, _STOPPED), (True, _STOPPED), (False, AuditStoreError("the store is out of reach")),
    (False, sqlite3.OperationalError("database is locked"))],
    ids=["stopped before the store", "stopped after its commit", "store refused", "driver error"])
def test_a_held_batch_is_stored_once_and_its_head_named(home: Path, after_commit: bool, error: Exception) -> None:
    """Held and retried, never raised to the agent: raising would stop the worker for an outage."""
    store = AuditStore(home / "audit.db")
    signer = load_signer(home)
    metrics = Metrics()
    flaky = _Flaky(store, signer, after_commit, error)
    writer = AuditWriter(store, signer, metrics, cast(AuditProcess, flaky), max_backoff_s=0.1)
    done = asyncio.run(writer.write([*_messages(1), b"not json"]))
    assert flaky.calls == 2 and store.count() == 3
    # The head to publish is the store's, whichever process committed it.
    assert done.checkpoint is not None and done.checkpoint == store.latest_checkpoint()
    assert done.added == (0 if after_commit else 3)
    assert _count(metrics, "sgbus_audit_process_failed_total") == (1 if error is _STOPPED else 0)
    assert _count(metrics, "sgbus_audit_store_failed_total") == (0 if error is _STOPPED else 1)
    assert _count(metrics, "sgbus_audit_stored_total") == done.added
    assert _count(metrics, "sgbus_dlq_total", reason="malformed_audit") == 1


def test_the_writer_without_a_process_stores_in_a_thread_and_counts(home: Path) -> None:
    store = AuditStore(home / "audit.db")
    metrics = Metrics()
    writer = AuditWriter(store, load_signer(home), metrics, None, max_backoff_s=0.1)
    done = asyncio.run(writer.write([*_messages(1), b"{}", b"[1]"]))
    assert (done.added, done.malformed, store.count()) == (3, 2, 3)
    assert _count(metrics, "sgbus_audit_stored_total") == 3
    assert _count(metrics, "sgbus_dlq_total", reason="malformed_audit") == 2
    assert _count(metrics, "sgbus_audit_process_failed_total") == 0


def test_a_closed_audit_process_is_not_retried_by_the_writer(home: Path) -> None:
    helper = AuditProcess(Settings(home=home, audit_db=home / "audit.db"))
    helper.close()
    writer = AuditWriter(AuditStore(home / "audit.db"), load_signer(home), Metrics(), helper,
                         max_backoff_s=0.1)
    with pytest.raises(HelperClosed):
        asyncio.run(asyncio.wait_for(writer.write(_messages(1)), 5))


def test_the_writer_in_a_thread_holds_a_batch_the_store_refuses(home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = AuditStore(home / "audit.db")
    calls: list[int] = []

    def refuse_once(*args: Any) -> Appended:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return append_messages(*args)

    monkeypatch.setattr("bus.audit_process.append_messages", refuse_once)
    writer = AuditWriter(store, load_signer(home), Metrics(), None, max_backoff_s=0.1)
    metrics = writer.metrics
    done = asyncio.run(writer.write(_messages(1)))
    assert len(calls) == 2 and done.added == 3 and store.count() == 3
    assert _count(metrics, "sgbus_audit_store_failed_total") == 1


def test_errors_are_described_without_a_driver_s_message() -> None:
    """A driver's message can hold a DSN or a host; sgbus's own errors are written to be shown."""
    assert describe(Exception("postgresql://sgbus:secret@db.internal/audit")) == "Exception"
    assert describe(AuditStoreError("the audit chain runs past its last signed checkpoint")) == (
        "AuditStoreError: the audit chain runs past its last signed checkpoint")


def test_the_store_access_handed_to_the_child_does_not_show_its_secrets(tmp_path: Path) -> None:
    access = _StoreAccess(tmp_path, tmp_path / "audit.db", "postgresql://sgbus:pw@db/audit", '{"kid": "k"}', True)
    assert "pw@" not in repr(access) and "kid" not in repr(access)


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_records_stored_by_the_audit_process_carry_their_ids(home: Path) -> None:
    """What goes through the pipe to the child comes back whole: the ids a query finds."""
    record = _record("partner-x", event_id=uuid.uuid4())
    helper = AuditProcess(Settings(home=home, audit_db=home / "audit.db"))
    try:
        done = asyncio.run(helper.append([v for _, v in encode_audit_batches([record])]))
    finally:
        helper.close()
    assert done.added == 1
    assert [r["audit_id"] for r in AuditStore(home / "audit.db").for_event(str(record.event_id))] == [
        str(record.audit_id)]


def test_a_helpers_pipes_hold_a_whole_batch_each_way() -> None:
    """A batch crosses to a helper and back in one write and one read, not in 64 KiB chunks that
    each wait for the worker's interpreter lock (bus/helper_process.py enlarge_pipes)."""
    import fcntl

    from bus.helper_process import PIPE_BYTES

    helper = HelperProcess("sgbus-test", _no_setup, (), AuditProcessFailed, "a test helper")
    helper.start()
    try:
        pool: Any = helper._pool
        want = min(PIPE_BYTES, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
        assert want > 64 * 1024
        for conn in (pool._call_queue._writer, pool._result_queue._reader):
            assert fcntl.fcntl(conn.fileno(), fcntl.F_GETPIPE_SZ) == want
        big = b"x" * (want - 4096)

        async def round_trip() -> int:
            return await helper.run(len, big)

        assert asyncio.run(round_trip()) == len(big)
    finally:
        helper.close()
