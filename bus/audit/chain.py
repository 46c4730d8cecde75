"""Hash-chained audit store (SQLite, or PostgreSQL when SGBUS_AUDIT_DSN is set) with
Ed25519-signed checkpoints, and its verification with the public key only.

Each stored record gets a sequence number, the previous record's hash and its own hash:
SHA-256 over `prev_hash`, a newline, and the canonical JSON of the record. Altering,
removing, inserting or reordering any record breaks the chain at that point. Each append
signs a checkpoint over the new head that names the previous checkpoint, so checkpoints form
their own chain; the audit stage also publishes each checkpoint to the compacted topic
`sg.audit.heads` (outside the database), and `verify` checks the database against the latest
published one: a tail removed together with its checkpoints, or a rewritten and rehashed
record, no longer matches what was published.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import logs
from bus.audit.signer import AuditSigner, AuditVerifier
from bus.exceptions import SgbusError
from bus.records import AuditRecord
from bus.settings import Settings

GENESIS = "0" * 64

log = logs.get("sgbus.audit")

# One schema for both databases: BIGINT is an integer in SQLite too (and, as the primary key,
# the rowid alias only when spelt INTEGER, which nothing here relies on).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    audit_id TEXT NOT NULL UNIQUE,
    ingest_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    decision TEXT NOT NULL,
    subject_token TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (ingest_id, recipient, decision)
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject_token);
CREATE INDEX IF NOT EXISTS audit_event ON audit (event_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    prev_checkpoint BIGINT NOT NULL,
    signed_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ingested (
    event_id TEXT PRIMARY KEY,
    content_sha256 TEXT NOT NULL,
    ingest_id TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_append_lock (
    id INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS lookups (
    lookup_id TEXT PRIMARY KEY DEFAULT {uuid},
    looked_at TEXT NOT NULL DEFAULT {now},
    command TEXT NOT NULL CHECK (command IN ('audit trail', 'chronology')),
    os_user TEXT NOT NULL CHECK (length(os_user) <= 64),
    db_login TEXT NOT NULL DEFAULT {login},
    reason TEXT NOT NULL CHECK (reason IN ('safeguarding', 'subject-access', 'data-protection', 'audit',
                                           'demonstration')),
    case_ref TEXT NOT NULL CHECK (length(case_ref) <= 40),
    asked_as TEXT NOT NULL CHECK (length(asked_as) <= 64),
    tokens TEXT NOT NULL CHECK (length(tokens) <= 4096)
);
"""
# The database fills in a look-up's id, time and (PostgreSQL) login, and a recorder may write
# none of them (bus/audit/roles.py): a row cannot be backdated or name another login than the one
# that added it. SQLite has no logins, and whoever can write its file can write anything.
_POSTGRES_DEFAULTS = {
    "uuid": "gen_random_uuid()::text",
    "now": "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    "login": "session_user",
}
_SQLITE_SCHEMA = _SCHEMA.format(uuid="(lower(hex(randomblob(16))))",
                                now="(strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))", login="''")

#: the store's tables (audit_append_lock only locked, by the chain's writer while it appends; never
#: written; lookups: who looked up a child, bus/audit/lookups.py)
TABLES = ("audit", "checkpoints", "ingested", "audit_append_lock", "lookups")
#: added after stores were deployed: a component's login that may not create it still starts (the
#: look-up that needs it then fails, saying to run `sgbus audit roles --apply`)
LATER_TABLES = ("lookups",)

def schema_statements() -> list[str]:
    """The PostgreSQL store's tables and indexes, one statement each."""
    return [" ".join(st.split()) for st in _SCHEMA.format(**_POSTGRES_DEFAULTS).split(";") if st.strip()]


# The columns queries use, stored beside each record's hashed body: verify checks they agree.
QUERY_COLUMNS = ("audit_id", "ingest_id", "event_id", "recipient", "decision", "subject_token", "decided_at")


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hash_canonical(prev_hash, canonical(body))


def hash_canonical(prev_hash: str, canonical_body: bytes) -> str:
    """chain_hash over a body already in canonical form (the writer stores that form too)."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical_body).hexdigest()


def checkpoint_message(seq: int, head: str, prev_checkpoint: int, signed_at: str) -> bytes:
    return f"sgbus-audit-checkpoint/2\n{seq}\n{head}\n{prev_checkpoint}\n{signed_at}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A signed chain head: what `sg.audit.heads` carries and the checkpoints table holds."""

    seq: int
    hash: str
    prev_checkpoint: int
    signed_at: str
    key_id: str
    signature: str

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        data = json.loads(raw)
        return cls(int(data["seq"]), str(data["hash"]), int(data["prev_checkpoint"]), str(data["signed_at"]),
                   str(data["key_id"]), str(data["signature"]))

    def verifies(self, verifier: AuditVerifier) -> bool:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verifier.verify(self.key_id, signature,
                               checkpoint_message(self.seq, self.hash, self.prev_checkpoint, self.signed_at),
                               seq=self.seq)


@dataclass(frozen=True)
class IngestedCheck:
    """What the register says about one event id at ingest."""

    event_id: str
    content_sha256: str
    ingest_id: str


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    body: dict[str, Any]
    prev_hash: str
    hash: str
    columns: dict[str, str]


class AuditStoreError(SgbusError):
    """The audit store cannot be opened or written (never carries the DSN or record content)."""


#: how long a PostgreSQL write waits for a lock unless the server or DSN sets lock_timeout
LOCK_TIMEOUT_S = 30

#: rows of the event id register in one SQLite INSERT (4 values each: within SQLite's oldest
#: limit of 999 values a statement)
_REGISTER_ROWS = 200

#: a look-up's columns as its recorder writes them (the database fills in the others: LOOKUP_FILLED)
LOOKUP_COLUMNS = ("command", "os_user", "reason", "case_ref", "asked_as", "tokens")
LOOKUP_FILLED = ("lookup_id", "looked_at", "db_login")


class AuditStore:
    """The single writer of the chain (the audit agent); readers verify and query it.
    SQLite at `path`, or PostgreSQL at `dsn`; the SQL is the same apart from placeholders and
    the writer's lock."""

    def __init__(self, path: Path | None = None, *, dsn: str | None = None) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("give exactly one of path (SQLite) or dsn (PostgreSQL)")
        self.path = path
        self.postgres = dsn is not None
        self.db: Any
        self._dsn: str | None = None  # kept to connect again after the server dropped us; never shown
        if dsn is not None:
            self._dsn = _with_liveness(require_tls(dsn))
            self.db = self._connect_postgres(self._dsn)
            self._create_postgres_schema()
            self._check_schema()
        else:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=30000")  # the ingest and audit stages share the file
            self.db.executescript(_SQLITE_SCHEMA)
            self._check_schema()

    @staticmethod
    def _connect_postgres(dsn: str) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(dsn, autocommit=True)
            shown = conn.execute("SHOW lock_timeout").fetchone()
            if shown is not None and shown[0] == "0":
                # A lock some other session holds for good (the chain's, the register's) fails the
                # batch after a while, counted and retried, rather than stalling it unseen.
                conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
            return conn
        except psycopg.Error as exc:
            # psycopg's message can name the host and user; the DSN may hold a password.
            raise AuditStoreError(f"cannot connect to the PostgreSQL audit store (SGBUS_AUDIT_DSN): "
                                  f"{type(exc).__name__}") from None

    def _reconnect_if_dropped(self) -> None:
        """A PostgreSQL connection the server dropped (a restart, a failover, an idle timeout)
        stays broken: connect again before the next write, so the batch the worker held on the
        failed one goes through on its retry, without a worker restart; one left in a failed
        transaction is rolled back. (SQLite has no such connection to lose.)"""
        if self._dsn is None:
            return
        if self.db.closed or self.db.broken:
            try:
                self.db.close()
            finally:
                self.db = self._connect_postgres(self._dsn)
            return
        from psycopg.pq import TransactionStatus

        # Alive but still in the transaction a failed write began (its BEGIN went through, then
        # a statement failed: a lock or statement timeout, a cancel): every later BEGIN would fail.
        if self.db.info.transaction_status in (TransactionStatus.INERROR, TransactionStatus.INTRANS):
            self.db.execute("ROLLBACK")

    def _rollback(self) -> None:
        """Roll back after a failed write; on a connection that is gone there is nothing to roll
        back, and the write's own error is the one to raise."""
        try:
            self.db.execute("ROLLBACK")
        except Exception:
            if not (self.postgres and (self.db.closed or self.db.broken)):
                raise

    def _create_postgres_schema(self) -> None:
        """Create the tables only if one is missing: a component's own login (bus/audit/roles.py)
        may not create anything, and PostgreSQL checks that right even for CREATE ... IF NOT EXISTS."""
        present = self.db.execute(
            f"SELECT {', '.join(f'to_regclass({t!r})' for t in TABLES)}").fetchone()
        if all(present):
            return
        missing = ", ".join(t for t, there in zip(TABLES, present, strict=True) if not there)
        import psycopg

        try:
            for statement in schema_statements():
                self.db.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            if set(missing.split(", ")) <= set(LATER_TABLES):
                return
            raise AuditStoreError(f"the audit store's tables ({missing}) are not there (or not in this login's "
                                  "search_path) and this login may not create them: run `sgbus audit roles --apply` "
                                  "once with the tables' owner's DSN") from None

    def _check_schema(self) -> None:
        if self.postgres:
            # From the catalogue, which every login may read: a component's login may not read
            # every table (the ingest stage's, for one, reads only the event id register).
            found = {str(name) for (name,) in self.db.execute(
                "SELECT attname FROM pg_attribute WHERE attisdropped = false AND ("
                "(attrelid = to_regclass('audit') AND attname IN ('ingest_id', 'decision')) OR "
                "(attrelid = to_regclass('checkpoints') AND attname = 'prev_checkpoint'))")}
            if found == {"ingest_id", "decision", "prev_checkpoint"}:
                return
            raise AuditStoreError(f"the audit store at {self.where} was made by an earlier sgbus (no ingest_id "
                                  "column); keep it for reference and start a new one")
        try:
            self.db.execute("SELECT ingest_id, decision FROM audit WHERE 1 = 0")
            self.db.execute("SELECT prev_checkpoint FROM checkpoints WHERE 1 = 0")
        except Exception:
            raise AuditStoreError(f"the audit store at {self.where} was made by an earlier sgbus (no ingest_id "
                                  "column); keep it for reference and start a new one") from None

    def can_rewrite(self) -> bool:
        """Whether this login could change or remove audit records or checkpoints (owner, or
        UPDATE, DELETE or TRUNCATE on either): a component's own login should not
        (bus/audit/roles.py). Always false for SQLite, which has no logins."""
        if not self.postgres:
            return False
        # Any role this login may become (SET ROLE works for NOINHERIT members too): a superuser,
        # the owner, or one with a right that changes rows (a trigger can, on rows others insert).
        row = self.db.execute(
            "SELECT EXISTS (SELECT FROM pg_class c, pg_roles r"
            " WHERE c.oid IN (to_regclass('audit'), to_regclass('checkpoints'), to_regclass('ingested'),"
            " to_regclass('lookups'))"
            " AND pg_has_role(r.oid, 'MEMBER')"
            " AND (r.rolsuper OR pg_has_role(r.oid, c.relowner, 'MEMBER')"
            " OR has_table_privilege(r.oid, c.oid, 'UPDATE, DELETE, TRUNCATE, TRIGGER')"
            " OR has_any_column_privilege(r.oid, c.oid, 'UPDATE')))").fetchone()
        return bool(row[0])

    @property
    def where(self) -> str:
        """Where the chain is, safe to print (never the DSN)."""
        return "PostgreSQL (SGBUS_AUDIT_DSN)" if self.postgres else str(self.path)

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.postgres else query

    def _execute(self, query: str, params: Iterable[Any] = ()) -> Any:
        return self.db.execute(self._sql(query), tuple(params))

    def _lock_for_append(self) -> None:
        self._reconnect_if_dropped()
        if self.postgres:
            self.db.execute("BEGIN")
            try:
                # One writer at a time extends the chain, even if two workers overlap in a rebalance.
                # A lock on a table of its own, never written: LOCK TABLE audit would take UPDATE
                # or DELETE rights on the chain, which the audit stage's login does not have, and
                # an advisory lock any login could hold to stall the stage (bus/audit/roles.py
                # gives the writers alone UPDATE on this one). A writer still locking `audit` (an
                # upgrade's old pod) is kept apart by the seq key: its INSERT waits for the
                # other's commit, then fails, and its batch is retried.
                self.db.execute("LOCK TABLE audit_append_lock IN EXCLUSIVE MODE")
            except BaseException:
                self._rollback()
                raise
        else:
            self.db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the chain as one committed state, while its writer goes on
        appending (SQLite's WAL and PostgreSQL's repeatable read both give readers a snapshot):
        a verification need not hold the writer back for the whole walk."""
        self._reconnect_if_dropped()
        self.db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY" if self.postgres else "BEGIN")
        try:
            yield
        finally:
            self._rollback()  # read only: nothing to keep

    def head(self) -> tuple[int, str]:
        row = self._execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def append(self, records: Iterable[AuditRecord], signer: AuditSigner | None = None,
               anchor: Checkpoint | None = None) -> tuple[int, Checkpoint | None]:
        """Chain and store new records in one transaction; a repeat of an (ingest, recipient,
        decision) record (at-least-once redelivery) is skipped. Signs a checkpoint over the new
        head, linked to the previous checkpoint; returns (records added, the new checkpoint).
        `anchor`: a head published outside the database (the last this stage published, or the
        one on sg.audit.heads at its start); the store must still hold it, record and checkpoint,
        or nothing is signed (a chain cut back or rewritten would otherwise be signed anew)."""
        added = 0
        checkpoint = None
        bodies = [rec.model_dump(mode="json") for rec in records]
        self._lock_for_append()
        try:
            seq, prev = self.head()
            if signer is not None and anchor is not None and not (
                    self.record_hash(anchor.seq) == anchor.hash == self.checkpoint_hash(anchor.seq)):
                raise AuditStoreError(f"the audit chain no longer holds its published head (record {anchor.seq}): "
                                      "records or checkpoints were removed or rewritten in the database; run "
                                      "`sgbus audit verify`")
            if signer is not None:
                last = self.latest_checkpoint()
                if last is not None and (last.seq, last.hash) != (seq, prev):
                    # Rows past the last signed head were added outside the audit stage; signing
                    # a checkpoint over them now would launder them. Stop and say so.
                    raise AuditStoreError(f"the audit chain runs past its last signed checkpoint "
                                          f"(record {last.seq}) to record {seq}: records were added outside "
                                          "the audit stage; run `sgbus audit verify`")
            seen = self._already_stored(bodies)
            rows = []
            for body in bodies:
                dedupe = (body["ingest_id"], body["recipient"], body["decision"])
                if body["audit_id"] in seen or dedupe in seen:
                    continue
                seen.update((body["audit_id"], dedupe))
                seq += 1
                text = canonical(body)  # once: hashed and stored (~25 µs a record)
                digest = hash_canonical(prev, text)
                rows.append((seq, *(body[c] for c in QUERY_COLUMNS), text.decode(), prev, digest))
                prev = digest
                added += 1
            if rows:
                insert = self._sql(f"INSERT INTO audit (seq, {', '.join(QUERY_COLUMNS)}, body, prev_hash, hash)"  # noqa: S608 - fixed column names
                                   f" VALUES ({', '.join('?' for _ in range(len(QUERY_COLUMNS) + 4))})")
                if self.postgres:
                    with self.db.cursor() as cur:
                        cur.executemany(insert, rows)
                else:
                    self.db.executemany(insert, rows)
            if added and signer is not None:
                last = self._execute("SELECT MAX(seq) FROM checkpoints").fetchone()[0]
                signed_at = datetime.now(UTC).isoformat()
                prev_cp = int(last or 0)
                checkpoint = Checkpoint(seq, prev, prev_cp, signed_at, signer.kid,
                                        signer.sign(checkpoint_message(seq, prev, prev_cp, signed_at)).hex())
                self._execute(
                    "INSERT INTO checkpoints (seq, hash, prev_checkpoint, signed_at, key_id, signature)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (checkpoint.seq, checkpoint.hash, checkpoint.prev_checkpoint, checkpoint.signed_at,
                     checkpoint.key_id, checkpoint.signature),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return added, checkpoint

    def _already_stored(self, bodies: list[dict[str, Any]]) -> set[Any]:
        """Audit ids and (ingest, recipient, decision) triples of `bodies` already in the chain
        (one query per 300 records rather than one per record)."""
        seen: set[Any] = set()
        for column, values in (("ingest_id", {b["ingest_id"] for b in bodies}),
                               ("audit_id", {b["audit_id"] for b in bodies})):
            ordered = sorted(values)
            for i in range(0, len(ordered), 300):
                chunk = ordered[i:i + 300]
                marks = ",".join("?" for _ in chunk)
                query = f"SELECT audit_id, ingest_id, recipient, decision FROM audit WHERE {column} IN ({marks})"  # noqa: S608
                for audit_id, ingest_id, recipient, decision in self._execute(query, chunk):
                    seen.update((audit_id, (ingest_id, recipient, decision)))
        return seen

    def register_ingested(self, checks: list[IngestedCheck]) -> dict[str, IngestedCheck]:
        """Record the first (content digest, ingest id) of each event id; returns, for every
        event id in `checks`, the first one recorded (possibly by an earlier batch, another
        ingest worker, or an earlier entry of `checks`)."""
        if not checks:
            return {}
        now = datetime.now(UTC).isoformat()
        rows = [(c.event_id, c.content_sha256, c.ingest_id, now) for c in checks]
        if not self.postgres:
            return self._register_sqlite(rows)
        insert = self._sql("INSERT INTO ingested (event_id, content_sha256, ingest_id, first_seen)"
                           " VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING")
        self._reconnect_if_dropped()
        self.db.execute("BEGIN")
        try:
            if self.postgres:
                with self.db.cursor() as cur:
                    cur.executemany(insert, rows)
            else:
                self.db.executemany(insert, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        found: dict[str, IngestedCheck] = {}
        ids = sorted({c.event_id for c in checks})
        for i in range(0, len(ids), 300):
            chunk = ids[i:i + 300]
            marks = ",".join("?" for _ in chunk)
            query = f"SELECT event_id, content_sha256, ingest_id FROM ingested WHERE event_id IN ({marks})"  # noqa: S608
            for event_id, digest, ingest_id in self._execute(query, chunk):
                found[str(event_id)] = IngestedCheck(str(event_id), str(digest), str(ingest_id))
        return found

    def _register_sqlite(self, rows: list[tuple[str, str, str, str]]) -> dict[str, IngestedCheck]:
        """register_ingested in a few SQLite statements, each one step: Python's sqlite3 lets go
        of the interpreter lock for every step (every row of an executemany or a result), and in
        the worker, whose event loop holds the lock, each step then waited to take it back: the
        register took ~16 ms (p50) for a batch of 250 there against ~3 ms alone
        (docs/BENCHMARKS.md session 24). Same rows, same order, same answer."""
        self.db.execute("BEGIN")
        try:
            for i in range(0, len(rows), _REGISTER_ROWS):
                chunk = rows[i:i + _REGISTER_ROWS]
                values = ",".join("(?, ?, ?, ?)" for _ in chunk)
                self.db.execute("INSERT INTO ingested (event_id, content_sha256, ingest_id, first_seen)"  # noqa: S608
                                f" VALUES {values} ON CONFLICT (event_id) DO NOTHING",
                                [value for row in chunk for value in row])
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        found: dict[str, IngestedCheck] = {}
        ids = sorted({row[0] for row in rows})
        for i in range(0, len(ids), 300):
            some = ids[i:i + 300]
            marks = ",".join("?" for _ in some)
            # One row: the matches as one JSON array, built inside SQLite.
            (found_json,) = self.db.execute(
                "SELECT json_group_array(json_array(event_id, content_sha256, ingest_id))"  # noqa: S608
                f" FROM ingested WHERE event_id IN ({marks})", some).fetchone()
            for event_id, digest, ingest_id in json.loads(found_json):
                found[str(event_id)] = IngestedCheck(str(event_id), str(digest), str(ingest_id))
        return found

    def _decided(self, decision: str, ingest_ids: list[str], *, body: bool = False) -> Iterator[tuple[str, str, str]]:
        """(ingest id, recipient, body or '') of the records with `decision` about `ingest_ids`,
        asked 300 ids at a time."""
        column = "body" if body else "''"
        for i in range(0, len(ingest_ids), 300):
            chunk = ingest_ids[i:i + 300]
            marks = ",".join("?" for _ in chunk)
            query = (f"SELECT ingest_id, recipient, {column} FROM audit WHERE decision = ? "  # noqa: S608 - ours only
                     f"AND ingest_id IN ({marks})")
            for ingest_id, recipient, text in self._execute(query, [decision, *chunk]):
                yield str(ingest_id), str(recipient), str(text)

    def delivered(self, ingest_ids: list[str]) -> set[tuple[str, str]]:
        """(ingest id, recipient) pairs among `ingest_ids` with an `allow` (delivered) record."""
        return {(i, r) for i, r, _body in self._decided("allow", ingest_ids)}

    def view_failed(self, ingest_ids: list[str]) -> dict[tuple[str, str], str | None]:
        """(ingest id, recipient) pairs among `ingest_ids` audited as view_failed, each with the
        replay proof its record holds (None in a record of an earlier release)."""
        found: dict[tuple[str, str], str | None] = {}
        for ingest_id, recipient, body in self._decided("view_failed", ingest_ids, body=True):
            proof = json.loads(body).get("replay_proof")
            found[(ingest_id, recipient)] = proof if isinstance(proof, str) else None
        return found

    def records(self, page: int = 5_000, after: int | None = None) -> Iterator[StoredRecord]:
        """Every record in chain order (or those after record `after`), read a page at a time:
        psycopg would otherwise fetch a whole long chain into memory before the first row."""
        query = (f"SELECT seq, body, prev_hash, hash, {', '.join(QUERY_COLUMNS)} FROM audit"  # noqa: S608
                 " WHERE seq > ? ORDER BY seq LIMIT ?")
        if after is None:
            after = -(2**63)  # below any seq: a record stored with seq 0 or less is still seen (and refused)
        while True:
            rows = self._execute(query, (after, page)).fetchall()
            for seq, body, prev, digest, *columns in rows:
                yield StoredRecord(int(seq), json.loads(body), str(prev), str(digest),
                                   dict(zip(QUERY_COLUMNS, (str(c) for c in columns), strict=True)))
            if len(rows) < page:
                return
            after = int(rows[-1][0])

    def count(self, up_to: int | None = None) -> int:
        """Records stored (with `up_to`, those numbered 1 to `up_to`)."""
        if up_to is None:
            return int(self._execute("SELECT COUNT(*) FROM audit").fetchone()[0])
        return int(self._execute("SELECT COUNT(*) FROM audit WHERE seq BETWEEN 1 AND ?", (up_to,)).fetchone()[0])

    def for_subject(self, tokens: Iterable[str]) -> list[dict[str, Any]]:
        tokens = list(tokens)
        marks = ",".join("?" for _ in tokens)
        rows = self._execute(
            f"SELECT body FROM audit WHERE subject_token IN ({marks}) ORDER BY seq", tokens  # noqa: S608 - marks only
        )
        return [json.loads(r[0]) for r in rows]

    def for_event(self, event_id: str) -> list[dict[str, Any]]:
        """The decisions about an event id (the gateway's status of a published event)."""
        rows = self._execute("SELECT body FROM audit WHERE event_id = ? ORDER BY seq", [event_id])
        return [json.loads(r[0]) for r in rows]

    def record_lookup(self, row: dict[str, str]) -> str:
        """Add one row to `lookups` (bus/audit/lookups.py); returns the id the database gave it.
        Raises AuditStoreError when it cannot be stored."""
        names = ", ".join(LOOKUP_COLUMNS)
        marks = ", ".join("?" for _ in LOOKUP_COLUMNS)
        try:
            self._reconnect_if_dropped()
            done = self._execute(f"INSERT INTO lookups ({names}) VALUES ({marks}) RETURNING lookup_id",  # noqa: S608
                                 [row[c] for c in LOOKUP_COLUMNS]).fetchone()
            return str(done[0])
        except Exception as exc:
            raise self._lookups_error(exc, "record the look-up") from None

    def lookups(self) -> list[dict[str, str]]:
        """Every recorded look-up, oldest first."""
        columns = (*LOOKUP_FILLED, *LOOKUP_COLUMNS)
        try:
            rows = self._execute(f"SELECT {', '.join(columns)} FROM lookups"  # noqa: S608 - names are ours
                                 " ORDER BY looked_at, lookup_id").fetchall()
        except Exception as exc:
            raise self._lookups_error(exc, "read the look-ups") from None
        return [dict(zip(columns, (str(v) for v in r), strict=True)) for r in rows]

    def _lookups_error(self, exc: Exception, doing: str) -> AuditStoreError:
        """What to tell the operator (the database's own message could quote a row)."""
        if self.postgres:
            import psycopg

            if isinstance(exc, psycopg.errors.UndefinedTable):
                return AuditStoreError("the audit store has no lookups table yet: run `sgbus audit roles --apply` "
                                       "once with the tables' owner's DSN")
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                return AuditStoreError(f"this login may not {doing}: make it a look-up recorder "
                                       "(`sgbus audit roles --apply --recorder LOGIN`)")
        return AuditStoreError(f"could not {doing}: {type(exc).__name__}")

    def latest_checkpoint(self) -> Checkpoint | None:
        row = self._execute("SELECT seq, hash, prev_checkpoint, signed_at, key_id, signature FROM checkpoints"
                            " ORDER BY seq DESC LIMIT 1").fetchone()
        return Checkpoint(int(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]), str(row[5])) if row else None

    def checkpoints(self, after: int | None = None) -> list[Checkpoint]:
        """Every checkpoint in order (every row: one with no usable seq fails the walk), or
        those after record `after`."""
        query = "SELECT seq, hash, prev_checkpoint, signed_at, key_id, signature FROM checkpoints"
        rows = (self._execute(query + " ORDER BY seq") if after is None
                else self._execute(query + " WHERE seq > ? ORDER BY seq", (after,)))
        return [Checkpoint(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5])) for r in rows]

    def record_hash(self, seq: int) -> str | None:
        row = self._execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return str(row[0]) if row else None

    def checkpoint_hash(self, seq: int) -> str | None:
        row = self._execute("SELECT hash FROM checkpoints WHERE seq = ?", (seq,)).fetchone()
        return str(row[0]) if row else None

    def count_checkpoints(self, up_to: int | None = None) -> int:
        """Checkpoints stored (with `up_to`, those at records 1 to `up_to`)."""
        if up_to is None:
            return int(self._execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])
        return int(self._execute("SELECT COUNT(*) FROM checkpoints WHERE seq BETWEEN 1 AND ?",
                                 (up_to,)).fetchone()[0])


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    checkpoints: int
    head: str
    problem: str | None = None
    first_bad_seq: int | None = None
    published_seq: int | None = None
    #: the last checkpoint a passed walk checked (0: none); with `records` and `head`, where a
    #: later walk may start (verify's `since`)
    last_checkpoint: int = 0


class _Hashes:
    """The hashes of records start+1..n of a verified chain, 32 bytes each."""

    def __init__(self, start: int = 0) -> None:
        self._start = start
        self._digests = bytearray()

    def append(self, digest: str) -> None:
        self._digests += bytes.fromhex(digest)

    def __contains__(self, seq: int) -> bool:
        return self._start < seq <= self._start + len(self._digests) // 32

    def __getitem__(self, seq: int) -> str:
        if seq not in self:
            raise KeyError(seq)
        at = seq - self._start
        return self._digests[32 * (at - 1):32 * at].hex()


def verify(store: AuditStore, verifier: AuditVerifier | None, published: Checkpoint | None = None,
           since: Verification | None = None) -> Verification:
    """Walk the chain and its checkpoints with the public keys only; report the first record
    that was altered, removed, inserted or moved, a query column that disagrees with its
    record, a missing or forged checkpoint, or a chain that ends before the latest head
    published outside the database (`published`, from sg.audit.heads). Read in one snapshot
    (AuditStore.snapshot), so the walk can run while records are appended; `published` must be
    read before (a head is published only after its records are committed).

    With `since`, a passed walk of the same chain, only what follows it is walked: its last
    record must still have the hash it had, and as many records and checkpoints as then must
    precede it. A rewrite that recomputes the chain changes that hash, so it is caught, and so
    is a removal. Old rows altered in place (a stored hash left as it was), or removed and
    replaced by others in their place, are caught only by a whole walk: run one too (the audit
    stage does, every SGBUS_AUDIT_FULL_VERIFY_INTERVAL_S when that is set)."""
    if since is not None and not since.ok:
        raise ValueError("a walk can only continue from one that passed")
    with store.snapshot():
        return _verify(store, verifier, published, since)


def _verify(store: AuditStore, verifier: AuditVerifier | None, published: Checkpoint | None,
            since: Verification | None = None) -> Verification:
    start = since.records if since is not None else 0
    prev, expected_seq, count = (since.head if since is not None else GENESIS), start + 1, start
    if since is not None and start > 0:
        known = store.record_hash(start)
        if known is None:
            return Verification(False, count, 0, prev, f"record {start} is missing (removed)", start)
        if known != prev:
            return Verification(False, count, 0, prev, f"record {start} differs from when it was last verified"
                                " (the chain was rewritten)", start)
        # Removed, or moved out of the chain's numbering (a junk row in their place would still
        # fail the whole walk): the short walk does not read these rows again.
        if store.count(up_to=start) != start:
            return Verification(False, count, 0, prev, f"records before record {start} were removed or renumbered"
                                " since the last verification")
    # Record n's hash at [32(n-1), 32n) from the walk's start: a dict of a long chain's hex
    # strings was most of the audit stage's memory.
    hashes = _Hashes(start)
    for rec in store.records(after=start if since is not None else None):
        count += 1
        if rec.seq != expected_seq:
            return Verification(False, count, 0, prev, f"record {expected_seq} is missing (removed)", expected_seq)
        if rec.prev_hash != prev:
            return Verification(False, count, 0, prev, f"record {rec.seq} does not follow record {rec.seq - 1}"
                                " (a record was removed, inserted or reordered before it)", rec.seq)
        if chain_hash(prev, rec.body) != rec.hash:
            return Verification(False, count, 0, prev, f"record {rec.seq} was altered", rec.seq)
        for column, value in rec.columns.items():
            if str(rec.body.get(column)) != value:
                return Verification(False, count, 0, prev, f"record {rec.seq}: column {column} disagrees with the "
                                    "signed record (changed in the database)", rec.seq)
        prev, expected_seq = rec.hash, rec.seq + 1
        hashes.append(rec.hash)
    stored = store.count()
    if stored != count:
        # Rows the walk by sequence number cannot reach (SQLite lets a NULL into the key column):
        # they would still count for dedupe and delivery checks, so they fail the chain.
        return Verification(False, count, 0, prev, f"{stored - count} record(s) are outside the chain "
                            "(no usable sequence number)", expected_seq)
    previous = since.last_checkpoint if since is not None else 0
    checkpoints = store.checkpoints(after=previous if since is not None else None)
    n = (since.checkpoints if since is not None else 0) + len(checkpoints)

    def fail(problem: str, seq: int) -> Verification:
        return Verification(False, count, n, prev, problem, seq, published.seq if published else None)

    def hash_at(seq: int) -> str | None:
        if seq in hashes:
            return hashes[seq]
        if since is not None and seq == start:
            return since.head
        return store.record_hash(seq) if since is not None and 0 < seq < start else None

    if since is not None and (store.count_checkpoints(up_to=previous) != since.checkpoints
                              or store.count_checkpoints() != n):
        return fail(f"checkpoints up to record {previous} were removed, added or renumbered since the last"
                    " verification", previous)
    last = checkpoints[-1].seq if checkpoints else previous
    if verifier is not None and not n and count and published is None:  # with a head, checked against it below
        return fail(f"records 1 to {expected_seq - 1} carry no signed checkpoint (checkpoints removed, or the "
                    "chain written outside the audit stage)", 1)
    if n and last < expected_seq - 1:
        return fail(f"records {last + 1} to {expected_seq - 1} follow the last signed checkpoint"
                    " (added outside the audit stage)", last + 1)
    for cp in checkpoints:
        if verifier is not None and not cp.verifies(verifier):
            return fail(f"checkpoint at record {cp.seq} has a bad signature", cp.seq)
        if cp.prev_checkpoint != previous:
            return fail(f"checkpoint at record {cp.seq} follows checkpoint {cp.prev_checkpoint}, which is missing"
                        " (checkpoints were removed)", cp.seq)
        signed = hash_at(cp.seq)
        if signed is None:
            return fail(f"records up to {cp.seq} were signed but the chain ends at {expected_seq - 1}"
                        " (removed from the end)", expected_seq)
        if signed != cp.hash:
            return fail(f"checkpoint at record {cp.seq} does not match the chain", cp.seq)
        previous = cp.seq
    if published is not None:
        if verifier is not None and not published.verifies(verifier):
            return fail("the published head (sg.audit.heads) has a bad signature", published.seq)
        head = hash_at(published.seq)
        if head is None:
            return fail(f"the published head is at record {published.seq} but the chain ends at "
                        f"{expected_seq - 1} (records and checkpoints removed from the end)", expected_seq)
        if head != published.hash:
            return fail(f"record {published.seq} differs from the published head (the chain was rewritten)",
                        published.seq)
        walked = since is None or published.seq > since.last_checkpoint
        stored_cp = (next((cp.hash for cp in checkpoints if cp.seq == published.seq), None) if walked
                     else store.checkpoint_hash(published.seq))
        if stored_cp != published.hash:
            return fail(f"the checkpoint at record {published.seq} (published) is missing", published.seq)
    return Verification(True, count, n, prev, published_seq=published.seq if published else None,
                        last_checkpoint=last)


#: What the audit store's connection uses unless its DSN says otherwise: a server that vanishes
#: without a reset (a failover's old primary, a dropped network) is noticed within about a minute,
#: and the held batch's retry connects again, rather than a write hanging for the kernel's TCP
#: retries (~15 minutes) before anything counts as failed.
_LIVENESS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
             "keepalives_count": 3, "tcp_user_timeout": 60_000}


def _with_liveness(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(dsn)
    return make_conninfo(dsn, **{k: v for k, v in _LIVENESS.items() if k not in given})


def require_tls(dsn: str) -> str:
    """The DSN with `sslmode=verify-full` unless it names a local socket: audit records cross
    the network only encrypted, to a server whose certificate matches its name. A DSN asking
    for a weaker mode over TCP is refused rather than silently upgraded."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # psycopg's message can echo the DSN, which may hold a password
        raise AuditStoreError("SGBUS_AUDIT_DSN is not a valid PostgreSQL connection string") from None
    hosts = [h for h in str(params.get("host") or "").split(",") if h]
    local_socket = bool(hosts) and all(h.startswith("/") or h.startswith("@") for h in hosts) \
        and not params.get("hostaddr")
    if local_socket:
        return dsn
    mode = params.get("sslmode")
    if mode is None:
        return make_conninfo(dsn, sslmode="verify-full")
    if mode != "verify-full":
        raise AuditStoreError(f"SGBUS_AUDIT_DSN asks for sslmode={mode} over TCP; the audit store needs "
                              "sslmode=verify-full (and sslrootcert= the server's CA) unless it is a local socket")
    return dsn


def open_audit_store(settings: Settings) -> AuditStore:
    """PostgreSQL when SGBUS_AUDIT_DSN is set, else SQLite at SGBUS_AUDIT_DB."""
    if settings.audit_dsn is not None:
        return AuditStore(dsn=settings.audit_dsn.get_secret_value())
    return AuditStore(settings.audit_db_path)


def warn_if_login_can_rewrite(store: AuditStore | None) -> None:
    """Say at start when a worker's or the gateway's PostgreSQL login could change or remove
    audit records: it should be one of `sgbus audit roles`' (README, "Audit store roles")."""
    if store is None:
        return
    try:
        risky = store.can_rewrite()
    except Exception as exc:  # a check, never a reason not to start
        log.warning("audit_store_rights_unknown", error=type(exc).__name__)
        return
    if risky:
        log.warning("audit_store_login_can_rewrite", store=store.where,
                    hint="give this component a login of its own from `sgbus audit roles`")


def retirement_point(checkpoints: list[Checkpoint], kid: str, verifier: AuditVerifier) -> tuple[int, list[int]]:
    """(the last record `kid` signed a checkpoint at before another key first signed one after
    it, 0 if none; the records of any checkpoint `kid` signed after that, such as an old pod's
    last append during a rolling update). Only checkpoints whose signatures verify count: a
    checkpoints row relabelled in the database cannot move the point."""
    signed = [cp for cp in sorted(checkpoints, key=lambda c: c.seq) if cp.verifies(verifier)]
    own = [cp.seq for cp in signed if cp.key_id == kid]
    if not own:
        return 0, []
    successor = next((cp.seq for cp in signed if cp.key_id != kid and cp.seq > own[0]), None)
    if successor is None:
        return own[-1], []
    return max((seq for seq in own if seq < successor), default=0), [seq for seq in own if seq > successor]
