"""Tracking (as MESH's): what became of an event a partner published through the gateway.
A follower reads sg.dlq into the receipt store (a letter counts only for the exact ingress
record the gateway wrote and the event id it carried); decisions come from the audit store,
only those about the publisher's own organisation's event."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bus import logs
from bus.audit.chain import AuditStore, open_audit_store, warn_if_login_can_rewrite
from bus.gateway.models import DeadLetterReason, EventStatus
from bus.gateway.receipts import ReceiptStore, StoredReceipt, position_key
from bus.policy.data import Partner, Partnership
from bus.security.kafka_access import KafkaAccess
from bus.settings import Settings
from bus.topics import DLQ

log = logs.get("sgbus.gateway.tracking")


class DeadLetterFollower(threading.Thread):
    """Reads ingest dead letters from sg.dlq into the receipt store, resuming where it stopped."""

    def __init__(self, access: KafkaAccess, store: ReceiptStore) -> None:
        super().__init__(name="gateway-dlq-follower", daemon=True)
        self.store = store
        self._stop_event = threading.Event()
        self._consumer = Consumer(access.librdkafka(**{
            "group.id": "gateway.dlq-follower", "enable.auto.commit": False, "isolation.level": "read_committed",
            "log_level": 3}))

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    self._follow()
                except Exception as exc:  # keep tracking: publishing and mailboxes go on meanwhile
                    log.error("dlq_follower_error", error=type(exc).__name__)
                    self._stop_event.wait(5.0)
        finally:
            self._consumer.close()

    def _follow(self) -> None:
        saved = self.store.position("dlq")
        self._consumer.assign([TopicPartition(DLQ, 0, int(saved) if saved is not None else OFFSET_BEGINNING)])
        while not self._stop_event.is_set():
            found: dict[str, tuple[str, list[dict[str, str]]]] = {}
            last = None
            for msg in self._consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                last = msg.offset()
                try:
                    letter = json.loads(msg.value() or b"")
                    if letter.get("stage") == "ingest" and letter.get("event_id"):
                        where = position_key(str(letter["topic"]), int(letter["partition"]), int(letter["offset"]))
                        reasons = [r for r in letter.get("reasons") or [] if isinstance(r, dict)]
                        found.setdefault(where, (str(letter["event_id"]), reasons))
                except Exception:  # noqa: S112 - anything can be written to sg.dlq (1e999, deep nesting): skip it
                    continue  # not an ingest dead letter; nothing to track
            if last is not None:
                self.store.add_dead_letters(found, str(last + 1))

    def stop(self) -> None:
        self._stop_event.set()


#: longest a status look-up waits for the audit store's connection
LOOKUP_WAIT_S = 1.0


class AuditBusy(Exception):
    """Other look-ups hold the audit store's connection: the status cannot be read now."""


class AuditReader:
    """Decisions by event id from the audit store, over one connection kept open (the store's
    schema statements run once, not per look-up) and reopened after an error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: AuditStore | None = None
        self._rights_checked = False
        self._lock = threading.Lock()

    def __call__(self, event_id: str) -> list[dict[str, Any]]:
        if self.settings.audit_dsn is None and not self.settings.audit_db_path.is_file():
            return []  # nothing audited yet
        # One look-up at a time on the one connection; a caller that cannot have it soon is
        # told the status cannot be read now (503), rather than queueing behind a slow store.
        if not self._lock.acquire(timeout=LOOKUP_WAIT_S):
            raise AuditBusy("the audit store is busy with other status look-ups")
        try:
            if self._store is None:
                self._store = open_audit_store(self.settings)
                if not self._rights_checked:
                    self._rights_checked = True
                    warn_if_login_can_rewrite(self._store)  # the gateway needs only to read
            try:
                return self._store.for_event(event_id)
            except Exception:
                self.close_unlocked()
                raise
        finally:
            self._lock.release()

    def close_unlocked(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            finally:
                self._store = None

    def close(self) -> None:
        with self._lock:
            self.close_unlocked()


def event_status(receipt: StoredReceipt, partner: Partner, store: ReceiptStore, partnership: Partnership,
                 decisions: Callable[[str], list[dict[str, Any]]]) -> EventStatus:
    """The publisher's view of its event: dead-lettered (with reason codes), ingested (how many
    partners it was shared with; who, only under agreements that say the publisher may know),
    or received (not processed yet). `decisions(event_id)` reads the audit store; only
    decisions about this organisation's event count (ingest keeps one event per source and id,
    so a copy the gateway sent again after a lost acknowledgement shares the first's)."""
    reasons = store.dead_letter(receipt.position, receipt.event_id)
    if reasons is not None:
        return EventStatus(event_id=receipt.event_id, state="dead_lettered",
                           received_at=receipt.received_at, shared_with=0,
                           reasons=[DeadLetterReason(**r) for r in reasons])
    records = [r for r in decisions(receipt.event_id)
               if r.get("source_org") == partner.org_id and r.get("source_agency") == partner.agency.value]
    if not records:
        return EventStatus(event_id=receipt.event_id, state="received",
                           received_at=receipt.received_at, shared_with=0)
    allowed = {str(r["recipient"]): r.get("agreement") for r in records if r.get("decision") == "allow"}
    tell = {a.id for a in partnership.agreements if a.publisher_may_know_recipients}
    named = sorted(p for p, agreement in allowed.items() if agreement in tell)
    return EventStatus(event_id=receipt.event_id, state="ingested",
                       received_at=receipt.received_at, shared_with=len(allowed), recipients=named or None)
