"""What the gateway remembers (SQLite under $SGBUS_HOME/gateway): one receipt per accepted
event id, for idempotent retries and status; and the dead-letter reasons of those events."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bus.security.files import private_dir

_SCHEMA = """
-- per partner: one organisation cannot squat another's event ids (the bus keys its own register
-- by source too)
CREATE TABLE IF NOT EXISTS receipts (
  partner TEXT NOT NULL, event_id TEXT NOT NULL, content_sha256 TEXT NOT NULL,
  topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL,
  received_at TEXT NOT NULL, PRIMARY KEY (partner, event_id));
-- keyed by the rejected record's ingress position and the event id it named: only the record
-- the gateway wrote matches, and a letter naming something else cannot hide or replace it
CREATE TABLE IF NOT EXISTS dead_letters (
  position TEXT NOT NULL, event_id TEXT NOT NULL, reasons TEXT NOT NULL, PRIMARY KEY (position, event_id));
CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class StoredReceipt:
    event_id: str
    partner: str
    content_sha256: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    received_at: datetime

    @property
    def position(self) -> str:
        return position_key(self.topic, self.partition, self.offset)


def position_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


class ReceiptStore:
    """Thread-safe (one connection, one lock): handlers run it from worker threads."""

    def __init__(self, directory: Path) -> None:
        private_dir(directory)
        self._db = sqlite3.connect(directory / "receipts.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def get(self, partner: str, event_id: str) -> StoredReceipt | None:
        with self._lock:
            row = self._db.execute("SELECT event_id, partner, content_sha256, topic, partition, offset, timestamp_ms, "
                                   "received_at FROM receipts WHERE partner = ? AND event_id = ?",
                                   (partner, event_id)).fetchone()
        if row is None:
            return None
        return StoredReceipt(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), int(row[5]), int(row[6]),
                             datetime.fromisoformat(row[7]))

    def put(self, receipt: StoredReceipt) -> StoredReceipt:
        """Store a receipt; if the id is already there, the stored one wins and is returned."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                receipt.partner, receipt.event_id, receipt.content_sha256, receipt.topic, receipt.partition,
                receipt.offset, receipt.timestamp_ms, receipt.received_at.isoformat()))
        stored = self.get(receipt.partner, receipt.event_id)
        assert stored is not None
        return stored

    def add_dead_letters(self, reasons: dict[str, tuple[str, list[dict[str, str]]]], position: str) -> None:
        """Record ingest dead letters by ingress position (only field and code of each reason)
        and how far sg.dlq has been read, together."""
        # Built before the transaction: a reason that is not an object must not leave the
        # shared connection inside one (every later receipt would join it, never committed).
        rows = [(where, event_id, json.dumps([{"field": str(r.get("field", "$")), "code": str(r.get("code", ""))}
                                               for r in why if isinstance(r, dict)]))
                for where, (event_id, why) in reasons.items()]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?)", rows)
                self._db.execute("INSERT OR REPLACE INTO positions VALUES ('dlq', ?)", (position,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def dead_letter(self, position: str, event_id: str) -> list[dict[str, str]] | None:
        with self._lock:
            row = self._db.execute("SELECT reasons FROM dead_letters WHERE position = ? AND event_id = ?",
                                   (position, event_id)).fetchone()
        return json.loads(row[0]) if row else None

    def position(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
