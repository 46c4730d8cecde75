"""What a connector has sent, so a restart or a re-delivered file sends nothing twice.

An event is written here, signed, *before* it is produced, and marked sent once the broker
has acknowledged it; after a crash in between, the same signed bytes are sent again, which
the bus recognises as a harmless replay (same id, same content). Only ids and file digests
remain once an event is sent: the signed copy (which holds identifiers) is then deleted."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from bus.security.files import private_dir


class Ledger:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self._db = sqlite3.connect(path, isolation_level=None)
        path.chmod(0o600)
        self._db.executescript("""
            PRAGMA secure_delete=ON;
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS events (
                event_id TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, signed TEXT, sent_at TEXT);
            CREATE TABLE IF NOT EXISTS files (
                sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, events INTEGER NOT NULL,
                rejected INTEGER NOT NULL, done_at TEXT NOT NULL);
        """)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "content_sha256" not in columns:  # a ledger from before content digests were kept
            self._db.execute("ALTER TABLE events ADD COLUMN content_sha256 TEXT")
        # File names recorded before names were left out, gone (zeroed where they were, with
        # secure_delete; the signed copies deleted once sent are zeroed alike).
        if self._db.execute("UPDATE files SET name = '' WHERE name != ''").rowcount:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._db.close()

    def file_done(self, sha256: str) -> bool:
        return self._db.execute("SELECT 1 FROM files WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def known(self, event_ids: Iterable[str]) -> dict[str, str | None]:
        """{event id: its content digest (None if recorded before digests were kept)} of those sent or staged."""
        ids = list(event_ids)
        found: dict[str, str | None] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self._db.execute(
                f"SELECT event_id, content_sha256 FROM events WHERE event_id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                chunk)
            found.update((r[0], r[1]) for r in rows)
        return found

    def pending(self) -> list[tuple[str, str]]:
        """(event id, signed JSON) written but not acknowledged: a crash came between."""
        return list(self._db.execute("SELECT event_id, signed FROM events WHERE sent_at IS NULL"))

    def stage(self, file_sha256: str, signed: dict[str, str], digests: dict[str, str] | None = None) -> None:
        """Events about to be produced (signed JSON by id), with the digest of each one's content."""
        digests = digests or {}
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO events (event_id, file_sha256, signed, content_sha256) VALUES (?, ?, ?, ?)",
                [(eid, file_sha256, body, digests.get(eid)) for eid, body in signed.items()])

    def mark_sent(self, event_ids: Iterable[str]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE events SET sent_at = ?, signed = NULL WHERE event_id = ?",
                                 [(now, eid) for eid in event_ids])

    def file_finished(self, sha256: str, events: int, rejected: int) -> None:
        # No file name: the partner's system chooses them, and one can be a child's. (The column
        # stays, empty, for ledgers written before.)
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, '', ?, ?, ?)",
                         (sha256, events, rejected, datetime.now(UTC).isoformat()))
