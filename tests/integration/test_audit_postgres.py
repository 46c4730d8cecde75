"""The audit chain on PostgreSQL (SGBUS_AUDIT_DSN), against a real server started from Debian's
package: the same chain, dedupe and tamper tests as on SQLite, and the worker writing to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bus.audit.chain import AuditStore, AuditStoreError, verify
from bus.audit.signer import AuditSigner, AuditVerifier
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus
from tests.postgres_server import Postgres, start_postgres
from tests.unit.test_audit_chain import (  # noqa: F401 - collected here again, against PostgreSQL
    _record,
    home,
    public,
    signer,
    test_a_changed_query_column_is_reported,
    test_a_forged_checkpoint_signature_is_reported,
    test_a_head_not_signed_by_the_audit_key_is_refused,
    test_a_removed_and_renumbered_record_is_reported,
    test_a_removed_checkpoint_is_reported,
    test_a_removed_record_is_reported,
    test_a_rewritten_and_rehashed_record_fails_against_the_published_head,
    test_a_tail_removed_with_its_checkpoints_fails_against_the_published_head,
    test_a_truncated_tail_is_caught_by_the_signed_checkpoint,
    test_an_altered_record_is_reported,
    test_an_inserted_record_is_reported,
    test_an_untouched_chain_verifies,
    test_reordered_records_are_reported,
    test_verification_reads_one_snapshot_while_records_are_appended,
)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(postgres: Postgres, signer: AuditSigner) -> Iterator[AuditStore]:  # noqa: F811 - imported fixture
    """The same 20 records in 4 signed batches as the SQLite fixture, in a fresh database."""
    s = AuditStore(dsn=postgres.create_database(f"audit_{uuid.uuid4().hex[:12]}"))
    for batch in range(4):
        s.append([_record(f"partner-{batch}-{i}", allow=i % 2 == 0) for i in range(5)], signer)
    yield s
    s.close()


def test_a_repeated_decision_is_stored_once_on_postgres(
        postgres: Postgres, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811 - imported fixtures
    s = AuditStore(dsn=postgres.create_database("audit_repeat"))
    ingest_id = uuid.uuid4()
    assert s.append([_record("a", ingest_id=ingest_id)], signer)[0] == 1
    assert s.append([_record("a", ingest_id=ingest_id), _record("b", ingest_id=ingest_id)], signer)[0] == 1
    assert s.count() == 2 and verify(s, public).ok
    s.close()


def test_the_event_id_register_works_on_postgres(postgres: Postgres) -> None:
    from bus.audit.chain import IngestedCheck

    s = AuditStore(dsn=postgres.create_database("audit_register"))
    first = s.register_ingested([IngestedCheck("e1", "aaa", "i1"), IngestedCheck("e1", "bbb", "i2")])
    assert first["e1"].ingest_id == "i1"
    assert s.register_ingested([IngestedCheck("e1", "ccc", "i3")])["e1"].content_sha256 == "aaa"
    s.close()


def _stored_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM audit")]


def _drop_connection(postgres: Postgres, store: AuditStore) -> None:
    """What a server restart or failover does to the worker's open connection."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        # Waits (up to 5 s) for the backend to be gone, so the next use sees it closed.
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)",
                             (store.db.info.backend_pid,)).fetchone() == (True,)


def test_a_dropped_connection_is_opened_again_for_the_held_batchs_retry(
        postgres: Postgres, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811 - imported fixtures
    """The batch in hand when the server dropped the connection fails (the worker holds it and
    retries); the retry connects again and succeeds, with no worker restart, and the chain stays
    whole. The event id register, on the same kind of connection, recovers the same way."""
    from bus.audit.chain import IngestedCheck

    s = AuditStore(dsn=postgres.create_database("audit_reconnect"))
    assert s.append([_record("a")], signer)[0] == 1
    _drop_connection(postgres, s)
    held = [_record("b"), _record("c")]
    with pytest.raises(psycopg.OperationalError):
        s.append(held, signer)
    assert s.append(held, signer)[0] == 2  # the retry
    assert s.count() == 3 and verify(s, public).ok

    assert s.register_ingested([IngestedCheck("e1", "aaa", "i1")])["e1"].ingest_id == "i1"
    _drop_connection(postgres, s)
    with pytest.raises(psycopg.OperationalError):
        s.register_ingested([IngestedCheck("e2", "bbb", "i2")])
    first = s.register_ingested([IngestedCheck("e2", "bbb", "i2"), IngestedCheck("e1", "ccc", "i3")])
    assert first["e2"].ingest_id == "i2" and first["e1"].ingest_id == "i1"
    s.close()


def test_a_write_that_timed_out_waiting_for_the_chain_lock_leaves_the_store_usable(
        postgres: Postgres, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811 - imported fixtures
    """A failed statement inside the append's transaction (here the chain's lock not granted
    within the server's lock_timeout) must not leave the connection in that failed transaction:
    the retry goes through once the lock is free."""
    name = "audit_lock_timeout"
    s = AuditStore(dsn=postgres.create_database(name))
    assert s.append([_record("a")], signer)[0] == 1
    s.db.execute("SET lock_timeout = '200ms'")
    with psycopg.connect(postgres.dsn(name)) as other:  # another writer holds the chain
        other.execute("LOCK TABLE audit IN EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            s.append([_record("b")], signer)
    assert s.append([_record("b")], signer)[0] == 1  # the retry, the lock free again
    assert s.count() == 2 and verify(s, public).ok
    s.close()


def test_a_store_that_cannot_connect_again_says_so_and_recovers_later(
        postgres: Postgres, signer: AuditSigner) -> None:  # noqa: F811 - imported fixture
    """While the server refuses new connections the retry fails with the store's own clear
    error (no DSN in it); once it accepts them, the next retry goes through."""
    name = "audit_refused"
    s = AuditStore(dsn=postgres.create_database(name))
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        _drop_connection(postgres, s)
        with pytest.raises(psycopg.OperationalError):
            s.append([_record("a")], signer)
        with pytest.raises(AuditStoreError) as refused:
            s.append([_record("a")], signer)
        assert "SGBUS_AUDIT_DSN" in str(refused.value) and "127.0.0.1" not in str(refused.value)
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert s.append([_record("a")], signer)[0] == 1
    s.close()


def test_the_store_notices_a_vanished_server_within_a_minute_unless_the_dsn_says_otherwise(
        postgres: Postgres) -> None:
    """TCP keepalives and a user timeout on the store's connection: a write to a server that
    vanished without a reset fails within about a minute (and is held and retried), not after
    the kernel's ~15 minutes of retries. A DSN's own setting wins."""
    s = AuditStore(dsn=postgres.create_database("audit_liveness"))
    params = s.db.info.get_parameters()
    assert (params["keepalives_idle"], params["tcp_user_timeout"], params["connect_timeout"]) == ("30", "60000", "10")
    s.close()
    own = AuditStore(dsn=postgres.dsn("audit_liveness") + "&tcp_user_timeout=5000")
    assert own.db.info.get_parameters()["tcp_user_timeout"] == "5000"
    own.close()


def test_an_unreachable_postgres_is_a_clear_error_without_the_dsn() -> None:
    dsn = "postgresql://sgbus:s3cret-pw@127.0.0.1:1/none"
    with pytest.raises(AuditStoreError) as info:
        AuditStore(dsn=dsn)
    assert "SGBUS_AUDIT_DSN" in str(info.value) and "s3cret-pw" not in str(info.value)


def _sgbus(bus: Bus, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SGBUS_HOME": str(bus.settings.home),
                               "SGBUS_POLICIES_DIR": str(REPO / "policies"), **env}, check=False)


def test_worker_writes_the_audit_chain_to_postgres_when_the_dsn_is_set(bus: Bus, postgres: Postgres) -> None:
    """... with a login of the store's least rights (`sgbus audit roles`: append to the chain and
    the event id register, change nothing), read back with a reader's; and, while the event id
    register cannot be written there, holds ingest (nothing shared, counted for
    SgbusEventRegisterFailing), then shares the held events once it can."""
    from bus.audit.roles import AuditRoles, apply

    owner = postgres.create_database("audit_worker")
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        # A register write blocked by a lock fails after half a second, not never.
        admin.execute("ALTER DATABASE audit_worker SET lock_timeout = '500ms'")
    postgres.create_login("worker_login")
    postgres.create_login("reader_login")
    roles = AuditRoles()
    apply(owner, roles, {roles.writer: ["worker_login"], roles.register: ["worker_login"],
                         roles.reader: ["reader_login"], roles.recorder: ["reader_login"]})
    dsn = postgres.dsn("audit_worker", "worker_login")
    original_env = dict(bus.worker_env or {})
    assert bus.worker is not None
    bus.worker.terminate()
    bus.worker.wait(60)
    bus.worker_env = {**original_env, "SGBUS_AUDIT_DSN": dsn}
    bus.start_worker()
    try:
        s = Synth(seed=606)
        child = s.child(min_age=5)
        events = [s.domestic_abuse_incident(child, school_urn="900001"), s.child_protection_plan(child)]
        bus.publish(events)
        ids = {e["event_id"] for e in events}

        def stored() -> list[str] | None:
            with psycopg.connect(dsn) as conn:
                try:
                    rows = [r[0] for r in conn.execute("SELECT event_id FROM audit")]
                except psycopg.errors.UndefinedTable:  # the worker has not opened the store yet
                    return None
            return rows if ids <= set(rows) else None

        wait_for(stored, 90, what="the worker's audit records in PostgreSQL")
        env = {"SGBUS_AUDIT_DSN": postgres.dsn("audit_worker", "reader_login")}
        # This database holds only this test's records: the published head (of the session's
        # SQLite chain) does not describe it, so it is checked offline.
        verified = _sgbus(bus, env, "audit", "verify", "--offline")
        assert verified.returncode == 0 and "audit OK" in verified.stdout, verified.stderr
        nhs = child["identifiers"]["nhs_number"]
        trail = _sgbus(bus, env, "audit", "trail", "--nhs-number", nhs, "--reason", "audit", "--json")
        assert trail.returncode == 0, trail.stderr
        assert {json.loads(line)["event_id"] for line in trail.stdout.splitlines() if line.strip()} >= ids
        assert nhs not in trail.stdout and dsn not in trail.stderr
        looked = _sgbus(bus, env, "audit", "lookups", "--json")
        assert [json.loads(line)["db_login"] for line in looked.stdout.splitlines()] == ["reader_login"], looked.stderr

        failed_before = bus.metric("sgbus_event_register_failed_total")
        held = s.child_protection_plan(s.child())
        with psycopg.connect(owner) as other:  # another session (the owner's) holds the register
            other.execute("LOCK TABLE ingested IN ACCESS EXCLUSIVE MODE")
            bus.publish([held])
            wait_for(lambda: bus.metric("sgbus_event_register_failed_total") >= failed_before + 2, 60,
                     what="the register's failures counted")
            assert held["event_id"] not in set(_stored_ids(dsn)), "shared while the register could not be written"
        wait_for(lambda: held["event_id"] in set(_stored_ids(dsn)), 60, what="the held event, the register free")
        worker_log = bus.worker_log.read_text()
        assert "event_register_unavailable_holding_batch" in worker_log
        assert "audit_store_login_can_rewrite" not in worker_log
    finally:
        bus.worker.terminate()
        bus.worker.wait(60)
        bus.worker_env = original_env
        bus.start_worker()
