"""The audit store's PostgreSQL roles (`sgbus audit roles`), against a real server: a taken-over
ingest or gateway pod, or even the audit stage's own login, cannot change or remove what the
chain holds."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bus.audit.chain import AuditStore, AuditStoreError, IngestedCheck, verify
from bus.audit.roles import AuditRoles, RolesError, apply
from bus.audit.signer import AuditSigner, AuditVerifier
from tests.integration.conftest import REPO
from tests.postgres_server import Postgres, start_postgres
from tests.unit.test_audit_chain import _record, home, public, signer  # noqa: F401 - fixtures used here

pytestmark = pytest.mark.integration

ROLES = AuditRoles()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = start_postgres()
    for login in ("audit_login", "ingest_login", "gateway_login", "worker_login"):
        server.create_login(login)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(postgres: Postgres) -> str:
    """A fresh database, its tables and roles set up by their owner, one login per component."""
    name = f"roles_{uuid.uuid4().hex[:12]}"
    apply(postgres.create_database(name), ROLES, {ROLES.writer: ["audit_login"], ROLES.register: ["ingest_login"],
                                                  ROLES.reader: ["gateway_login"]})
    return name


def _refused(dsn: str, statement: str) -> bool:
    """Whether the server refuses `statement` to this login for want of rights."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement.encode())
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def test_the_audit_stages_login_appends_and_signs_but_cannot_change_or_remove_a_record(
        postgres: Postgres, database: str, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811
    dsn = postgres.dsn(database, "audit_login")
    store = AuditStore(dsn=dsn)
    assert store.append([_record("a"), _record("b")], signer)[0] == 2
    assert store.append([_record("c")], signer)[0] == 1
    assert verify(store, public).ok and not store.can_rewrite()
    store.close()
    for statement in ("UPDATE audit SET body = '{}' WHERE seq = 1", "DELETE FROM audit WHERE seq = 3",
                      "DELETE FROM checkpoints", "TRUNCATE audit", "UPDATE checkpoints SET hash = 'x'",
                      "INSERT INTO ingested VALUES ('e', 'd', 'i', 't')", "SELECT * FROM ingested",
                      "DROP TABLE audit", "ALTER TABLE audit DROP CONSTRAINT audit_pkey"):
        assert _refused(dsn, statement), statement


def test_the_ingest_stages_login_keeps_the_event_id_register_and_cannot_touch_the_chain(
        postgres: Postgres, database: str, signer: AuditSigner) -> None:  # noqa: F811
    AuditStore(dsn=postgres.dsn(database, "audit_login")).append([_record("a")], signer)
    dsn = postgres.dsn(database, "ingest_login")
    store = AuditStore(dsn=dsn)
    first = store.register_ingested([IngestedCheck("e1", "aaa", "i1"), IngestedCheck("e1", "bbb", "i2")])
    assert first["e1"].ingest_id == "i1" and not store.can_rewrite()
    store.close()
    for statement in ("SELECT * FROM audit", "INSERT INTO checkpoints VALUES (9, 'h', 0, 't', 'k', 's')",
                      "DELETE FROM audit", "UPDATE audit SET decision = 'deny'",
                      # A removed register row would let a replayed signed event be ingested again.
                      "DELETE FROM ingested", "UPDATE ingested SET content_sha256 = 'x'", "TRUNCATE ingested"):
        assert _refused(dsn, statement), statement


def test_the_gateways_login_reads_decisions_and_verifies_but_writes_nothing(
        postgres: Postgres, database: str, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811
    record = _record("a")
    AuditStore(dsn=postgres.dsn(database, "audit_login")).append([record], signer)
    dsn = postgres.dsn(database, "gateway_login")
    store = AuditStore(dsn=dsn)
    assert [d["recipient"] for d in store.for_event(str(record.event_id))] == ["a"]
    assert verify(store, public).ok and not store.can_rewrite()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        store.append([_record("b")], signer)
    store.close()
    for statement in ("INSERT INTO ingested VALUES ('e', 'd', 'i', 't')", "DELETE FROM audit",
                      "UPDATE checkpoints SET signature = 'x'", "SELECT * FROM ingested"):
        assert _refused(dsn, statement), statement


def test_the_tables_owner_is_warned_of_as_a_login_that_can_rewrite(postgres: Postgres, database: str) -> None:
    store = AuditStore(dsn=postgres.dsn(database))
    assert store.can_rewrite()  # the owner: the insider the published heads guard against
    store.close()


@pytest.mark.parametrize("grant", [
    "GRANT UPDATE (body) ON audit TO {login}",  # a column right
    "GRANT TRIGGER ON audit TO {login}",  # a trigger can change rows others insert
    "GRANT DELETE ON ingested TO {login}",
    "GRANT sgbus TO {login}",  # the owner's role, even without inheriting it (SET ROLE)
])
def test_a_login_that_could_rewrite_some_other_way_is_warned_of(postgres: Postgres, database: str,
                                                                grant: str) -> None:
    login = f"risky_{uuid.uuid4().hex[:8]}"
    postgres.create_login(login)
    with psycopg.connect(postgres.dsn(database), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {login} NOINHERIT".encode())
        conn.execute(f"GRANT {ROLES.reader} TO {login}".encode())
        conn.execute(grant.format(login=login).encode())
    store = AuditStore(dsn=postgres.dsn(database, login))
    assert store.can_rewrite()
    store.close()


def test_roles_set_up_again_take_back_a_wider_grant(postgres: Postgres, database: str) -> None:
    owner = postgres.dsn(database)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"GRANT UPDATE, DELETE ON audit TO {ROLES.writer}".encode())
        conn.execute(b"GRANT SELECT ON ingested TO PUBLIC")
    assert AuditStore(dsn=postgres.dsn(database, "audit_login")).can_rewrite()
    apply(owner, ROLES, {})
    assert not AuditStore(dsn=postgres.dsn(database, "audit_login")).can_rewrite()
    assert _refused(postgres.dsn(database, "gateway_login"), "SELECT * FROM ingested")


def test_a_components_login_cannot_create_the_missing_tables_and_is_told_what_to_run(postgres: Postgres) -> None:
    name = f"roles_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    with pytest.raises(AuditStoreError) as info:
        AuditStore(dsn=postgres.dsn(name, "audit_login"))
    assert "sgbus audit roles --apply" in str(info.value) and "audit_login" not in str(info.value)


def test_another_writer_holding_the_chain_lock_delays_an_append_and_leaves_the_store_usable(
        postgres: Postgres, database: str, signer: AuditSigner, public: AuditVerifier) -> None:  # noqa: F811
    """The lock that keeps two writers from extending the chain at once (one a rebalance's
    overlap): not granted within the lock timeout, the append fails (counted, held and
    retried) and its retry goes through once the lock is free."""
    store = AuditStore(dsn=postgres.dsn(database, "audit_login"))
    assert store.db.execute("SHOW lock_timeout").fetchone() == ("30s",)  # never a stall unseen
    store.db.execute("SET lock_timeout = '200ms'")
    with psycopg.connect(postgres.dsn(database, "audit_login")) as other:
        other.execute("LOCK TABLE audit_append_lock IN EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            store.append([_record("a")], signer)
    assert store.append([_record("a")], signer)[0] == 1
    assert verify(store, public).ok
    store.close()


def test_no_login_but_the_writers_can_hold_the_chain_lock(postgres: Postgres, database: str) -> None:
    """Before, an advisory lock: any login on the database (a reader, the ingest stage's, one
    with no rights at all) could hold it and stall the audit stage."""
    for login in ("ingest_login", "gateway_login", "stranger_login"):
        if login == "stranger_login":
            with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
                if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'stranger_login'").fetchone():
                    admin.execute(b'CREATE ROLE "stranger_login" LOGIN')
        with psycopg.connect(postgres.dsn(database, login)) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("LOCK TABLE audit_append_lock IN EXCLUSIVE MODE")


def test_rights_given_by_someone_else_or_a_mighty_group_role_stop_the_set_up_and_are_named(
        postgres: Postgres, database: str) -> None:
    owner = postgres.dsn(database)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(b"GRANT DELETE ON audit TO audit_login")  # to the login itself, not its group
        conn.execute(b"GRANT UPDATE (body) ON audit TO gateway_login")
    with pytest.raises(RolesError) as refused:
        apply(owner, ROLES, {})
    assert "audit_login has DELETE on audit" in str(refused.value)
    assert "gateway_login has UPDATE on audit.body" in str(refused.value)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(b"REVOKE DELETE ON audit FROM audit_login")
        conn.execute(b"REVOKE UPDATE (body) ON audit FROM gateway_login")
    apply(owner, ROLES, {})
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:  # a group role that can become the owner
        admin.execute(f"GRANT sgbus TO {ROLES.reader}".encode())
        try:
            with pytest.raises(RolesError) as refused:
                apply(owner, ROLES, {})
            assert f"{ROLES.reader} is a member of other roles" in str(refused.value)
        finally:
            admin.execute(f"REVOKE sgbus FROM {ROLES.reader}".encode())


def _sgbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SGBUS_POLICIES_DIR": str(REPO / "policies"), **env}, check=False)


def test_audit_roles_apply_sets_up_a_new_store_and_names_no_secret(postgres: Postgres, tmp_path: object) -> None:
    name = f"roles_{uuid.uuid4().hex[:12]}"
    owner = postgres.create_database(name)
    done = _sgbus({"SGBUS_AUDIT_DSN": owner, "SGBUS_HOME": str(tmp_path)}, "audit", "roles", "--apply",
                  "--writer", "worker_login", "--register", "worker_login")
    assert done.returncode == 0, done.stderr
    assert ROLES.writer in done.stdout and owner not in done.stdout + done.stderr
    # The all-in-one worker's login: both the chain and the register, and still no rewrite.
    store = AuditStore(dsn=postgres.dsn(name, "worker_login"))
    assert store.register_ingested([IngestedCheck("e1", "aaa", "i1")])["e1"].ingest_id == "i1"
    assert not store.can_rewrite()
    store.close()
    bad = _sgbus({"SGBUS_AUDIT_DSN": owner, "SGBUS_HOME": str(tmp_path)}, "audit", "roles", "--apply",
                 "--reader", "no_such_login")
    assert bad.returncode == 1 and "no_such_login" in bad.stderr and "Traceback" not in bad.stderr


TOKEN = "psn:k123abc:" + "a" * 52


def _lookup(store: AuditStore) -> str:
    from bus.audit.lookups import Reason, record_lookup

    return record_lookup(store, command="audit trail", reason=Reason.SAFEGUARDING, case_ref="MASH/1",
                         tokens={TOKEN})


@pytest.fixture
def person(postgres: Postgres, database: str) -> str:
    """A person's login, set up as `sgbus audit roles --recorder` does: reader and recorder."""
    login = f"person_{uuid.uuid4().hex[:8]}"
    postgres.create_login(login)
    apply(postgres.dsn(database), ROLES, {ROLES.reader: [login], ROLES.recorder: [login]})
    return login


def test_a_lookup_is_recorded_under_the_login_the_database_names_and_cannot_be_forged_or_removed(
        postgres: Postgres, database: str, person: str) -> None:
    dsn = postgres.dsn(database, person)
    store = AuditStore(dsn=dsn)
    lookup_id = _lookup(store)
    [row] = store.lookups()
    assert row["lookup_id"] == lookup_id and row["db_login"] == person and row["reason"] == "safeguarding"
    assert row["looked_at"].endswith("+00:00") and not store.can_rewrite()
    store.close()
    insert = "INSERT INTO lookups (command, os_user, reason, case_ref, asked_as, tokens{}) " \
             "VALUES ('audit trail', 'u', 'audit', '', '', '[]'{})"
    for statement in ("UPDATE lookups SET reason = 'audit'", "DELETE FROM lookups", "TRUNCATE lookups",
                      # Naming another login, backdating, choosing the id:
                      insert.format(", db_login", ", 'audit_login'"),
                      insert.format(", looked_at", ", '2001-01-01T00:00:00+00:00'"),
                      insert.format(", lookup_id", ", 'x'")):
        assert _refused(dsn, statement), statement
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(insert.format("", "").replace("'audit', ''", "'curiosity', ''").encode())
    # The workers' and the gateway's logins neither read who is being looked into nor add to it.
    for login in ("audit_login", "ingest_login", "gateway_login"):
        assert _refused(postgres.dsn(database, login), "SELECT * FROM lookups")
        with pytest.raises(AuditStoreError, match="look-up recorder"):
            _lookup(AuditStore(dsn=postgres.dsn(database, login)))


def test_a_store_set_up_before_lookups_still_serves_its_workers_and_the_trail_says_what_to_run(
        postgres: Postgres, database: str, person: str) -> None:
    """An upgrade: the workers' logins start as before; a look-up is refused (so nothing is
    shown) until the owner runs `sgbus audit roles --apply` again."""
    owner = postgres.dsn(database)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(b"DROP TABLE lookups")
    AuditStore(dsn=postgres.dsn(database, "audit_login")).close()
    store = AuditStore(dsn=postgres.dsn(database, person))
    with pytest.raises(AuditStoreError, match="sgbus audit roles --apply"):
        _lookup(store)
    apply(owner, ROLES, {})
    _lookup(store)
    assert [r["db_login"] for r in store.lookups()] == [person]


def test_a_right_on_lookups_given_with_grant_option_stops_the_set_up(postgres: Postgres, database: str,
                                                                    person: str) -> None:
    """A login that may pass its right on could give anyone the look-ups to read."""
    owner = postgres.dsn(database)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(b"GRANT SELECT ON lookups TO " + person.encode() + b" WITH GRANT OPTION")
    with pytest.raises(RolesError, match=f"{person} has SELECT on lookups WITH GRANT OPTION"):
        apply(owner, ROLES, {})
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(b"REVOKE SELECT ON lookups FROM " + person.encode())
    apply(owner, ROLES, {})
