"""Hash-chained audit store (SQLite, or PostgreSQL when SGBUS_AUDIT_DSN is set) with
Ed25519-signed checkpoints, and its verification.

Each stored record gets a sequence number, the previous record's hash and its own hash:
SHA-256 over `prev_hash`, a newline, and the canonical JSON of the record. Altering,
removing, inserting or reordering any record breaks the chain at that point; signed
checkpoints over the chain head also expose a truncated tail.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.pseudonymise.keyring import Keyring
from bus.records import AuditRecord
from bus.settings import Settings

GENESIS = "0" * 64

# One schema for both databases: BIGINT is an integer in SQLite too (and, as the primary key,
# the rowid alias only when spelt INTEGER, which nothing here relies on).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    audit_id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject_token TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (event_id, recipient)
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject_token);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(body)).hexdigest()


def _checkpoint_message(seq: int, head: str, signed_at: str) -> bytes:
    return f"sgbus-audit-checkpoint\n{seq}\n{head}\n{signed_at}".encode()


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    body: dict[str, Any]
    prev_hash: str
    hash: str


class AuditStoreError(Exception):
    """The audit store cannot be opened or written (never carries the DSN or record content)."""


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
        if dsn is not None:
            import psycopg

            dsn = require_tls(dsn)
            try:
                self.db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                # psycopg's message can name the host and user; the DSN may hold a password.
                raise AuditStoreError(f"cannot connect to the PostgreSQL audit store (SGBUS_AUDIT_DSN): "
                                      f"{type(exc).__name__}") from None
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(statement)
        else:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)

    @property
    def where(self) -> str:
        """Where the chain is, safe to print (never the DSN)."""
        return "PostgreSQL (SGBUS_AUDIT_DSN)" if self.postgres else str(self.path)

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.postgres else query

    def _execute(self, query: str, params: Iterable[Any] = ()) -> Any:
        return self.db.execute(self._sql(query), tuple(params))

    def _lock_for_append(self) -> None:
        if self.postgres:
            self.db.execute("BEGIN")
            # One writer at a time extends the chain, even if two workers overlap in a rebalance.
            self.db.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
        else:
            self.db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.db.close()

    def head(self) -> tuple[int, str]:
        row = self._execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def append(self, records: Iterable[AuditRecord], keyring: Keyring | None = None) -> int:
        """Chain and store new records in one transaction; a repeat of an (event, recipient)
        decision (at-least-once redelivery) is skipped. Signs a checkpoint over the new head."""
        added = 0
        bodies = [rec.model_dump(mode="json") for rec in records]
        self._lock_for_append()
        try:
            seq, prev = self.head()
            seen = self._already_stored(bodies)
            rows = []
            for body in bodies:
                if body["audit_id"] in seen or (body["event_id"], body["recipient"]) in seen:
                    continue
                seen.update((body["audit_id"], (body["event_id"], body["recipient"])))
                seq += 1
                digest = chain_hash(prev, body)
                rows.append((seq, body["audit_id"], body["event_id"], body["recipient"], body["subject_token"],
                             body["decided_at"], canonical(body).decode(), prev, digest))
                prev = digest
                added += 1
            if rows:
                insert = self._sql("INSERT INTO audit (seq, audit_id, event_id, recipient, subject_token, decided_at,"
                                   " body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                if self.postgres:
                    with self.db.cursor() as cur:
                        cur.executemany(insert, rows)
                else:
                    self.db.executemany(insert, rows)
            if added and keyring is not None and keyring.audit is not None:
                signed_at = datetime.now(UTC).isoformat()
                signature = keyring.audit.sign(_checkpoint_message(seq, prev, signed_at))
                self._execute(
                    "INSERT INTO checkpoints (seq, hash, signed_at, key_id, signature) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, signed_at = excluded.signed_at,"
                    " key_id = excluded.key_id, signature = excluded.signature",
                    (seq, prev, signed_at, keyring.audit.kid, signature.hex()),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return added

    def _already_stored(self, bodies: list[dict[str, Any]]) -> set[Any]:
        """Audit ids and (event, recipient) pairs of `bodies` already in the chain (one query
        per 300 records rather than one per record)."""
        seen: set[Any] = set()
        for column, values in (("event_id", {b["event_id"] for b in bodies}),
                               ("audit_id", {b["audit_id"] for b in bodies})):
            ordered = sorted(values)
            for i in range(0, len(ordered), 300):
                chunk = ordered[i:i + 300]
                marks = ",".join("?" for _ in chunk)
                query = f"SELECT audit_id, event_id, recipient FROM audit WHERE {column} IN ({marks})"  # noqa: S608
                for audit_id, event_id, recipient in self._execute(query, chunk):
                    seen.update((audit_id, (event_id, recipient)))
        return seen

    def records(self) -> Iterator[StoredRecord]:
        for seq, body, prev, digest in self._execute("SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq"):
            yield StoredRecord(int(seq), json.loads(body), str(prev), str(digest))

    def count(self) -> int:
        return int(self._execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def for_subject(self, tokens: Iterable[str]) -> list[dict[str, Any]]:
        tokens = list(tokens)
        marks = ",".join("?" for _ in tokens)
        rows = self._execute(
            f"SELECT body FROM audit WHERE subject_token IN ({marks}) ORDER BY seq", tokens  # noqa: S608 - marks only
        )
        return [json.loads(r[0]) for r in rows]

    def checkpoints(self) -> list[tuple[int, str, str, str, str]]:
        return [tuple(r) for r in self._execute(
            "SELECT seq, hash, signed_at, key_id, signature FROM checkpoints ORDER BY seq")]


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    checkpoints: int
    head: str
    problem: str | None = None
    first_bad_seq: int | None = None


def verify(store: AuditStore, keyring: Keyring | None = None) -> Verification:
    """Walk the chain; report the first record that was altered, removed, inserted or moved."""
    prev, expected_seq, count = GENESIS, 1, 0
    hashes: dict[int, str] = {}
    for rec in store.records():
        count += 1
        if rec.seq != expected_seq:
            return Verification(False, count, 0, prev, f"record {expected_seq} is missing (removed)", expected_seq)
        if rec.prev_hash != prev:
            return Verification(False, count, 0, prev, f"record {rec.seq} does not follow record {rec.seq - 1}"
                                " (a record was removed, inserted or reordered before it)", rec.seq)
        if chain_hash(prev, rec.body) != rec.hash:
            return Verification(False, count, 0, prev, f"record {rec.seq} was altered", rec.seq)
        prev, expected_seq = rec.hash, rec.seq + 1
        hashes[rec.seq] = rec.hash
    checkpoints = store.checkpoints()
    for seq, digest, signed_at, kid, signature in checkpoints:
        if keyring is not None and keyring.audit is not None:
            if not keyring.audit.verify(kid, bytes.fromhex(signature), _checkpoint_message(seq, digest, signed_at)):
                return Verification(False, count, len(checkpoints), prev,
                                    f"checkpoint at record {seq} has a bad signature", seq)
        if seq not in hashes:
            return Verification(False, count, len(checkpoints), prev,
                                f"records up to {seq} were signed but the chain ends at {expected_seq - 1}"
                                " (removed from the end)", expected_seq)
        if hashes[seq] != digest:
            return Verification(False, count, len(checkpoints), prev,
                                f"checkpoint at record {seq} does not match the chain", seq)
    return Verification(True, count, len(checkpoints), prev)


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
