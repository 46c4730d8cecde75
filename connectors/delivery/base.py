"""A partner-side consumer: reads sg.deliver.<partner> in order, hands each event to a sink,
commits only after the sink succeeded, and skips event ids it has already delivered."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from confluent_kafka import Consumer, Message, Producer

from bus.exceptions import SgbusError
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import delivery_group
from connectors.delivery.metrics import DeliveryMetrics

DLQ = "sg.dlq"
DELIVER_PREFIX = "sg.deliver."


class Rejected(SgbusError):
    """The partner refused an event for good (e.g. HTTP 4xx): dead-letter it, move on."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class Sink(Protocol):
    name: str

    def deliver(self, event_id: str, body: bytes) -> None:
        """Deliver one event or raise Rejected; any other failure must be retried inside."""

    def flush(self) -> None:
        """Make everything delivered so far durable (e.g. finish a file)."""


class SeenStore:
    """Events already delivered to this partner by this connector (agency/org/event id): the
    dedupe that makes an at-least-once topic exactly-once for the partner's system."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")

    def seen(self, event_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen WHERE event_id = ?", (event_id,)).fetchone() is not None

    def add(self, event_id: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (event_id,))


@dataclass
class DeliveryStats:
    delivered: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0


def _event_id(msg: Message) -> tuple[str, str]:
    """(event id, dedupe key). The key is the publishing organisation's and its event id, as the
    bus registers events: event ids are the publisher's to choose, so another organisation's
    event with the same id is another event, never a duplicate."""
    try:
        event = json.loads(msg.value() or b"")
        event_id, source = str(event["event_id"]), event["source"]
        return event_id, f"{source['agency']}/{source['org_id']}/{event_id}"
    except (ValueError, KeyError, TypeError):
        unparseable = f"unparseable@{msg.partition()}:{msg.offset()}"
        return unparseable, unparseable


def run_delivery(
    *, access: KafkaAccess, partner: str, sink: Sink, state_dir: Path, max_events: int | None = None,
    idle_timeout_s: float | None = None, should_stop: Callable[[], bool] = lambda: False,
    metrics: DeliveryMetrics | None = None,
) -> DeliveryStats:
    """Deliver until stopped, `max_events` handled, or `idle_timeout_s` without new events."""
    # `access` is the partner's delivery principal: it reads only this partner's topic, in
    # groups named for it, and writes only dead letters.
    consumer = Consumer(access.librdkafka(**{
        "group.id": delivery_group(partner, sink.name), "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed", "log_level": 3,
    }))
    dlq = Producer(access.librdkafka_producer(**{"enable.idempotence": True, "log_level": 3}))
    seen = SeenStore(state_dir / f"{partner}-{sink.name}.db")
    stats = DeliveryStats()
    consumer.subscribe([DELIVER_PREFIX + partner])
    last_activity = time.monotonic()
    try:
        while not should_stop():
            if max_events is not None and stats.delivered + stats.dead_lettered >= max_events:
                break
            budget = 100 if max_events is None else max(1, min(100, max_events - stats.delivered - stats.dead_lettered))
            batch = [m for m in consumer.consume(num_messages=budget, timeout=0.2) if not m.error()]
            if not batch:
                if idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
                    break
                continue
            last_activity = time.monotonic()
            delivered_ids = []
            for msg in batch:
                event_id, key = _event_id(msg)
                if seen.seen(key) or key in delivered_ids:
                    stats.duplicates_skipped += 1
                    if metrics:
                        metrics.outcome("duplicate")
                    continue
                try:
                    sink.deliver(event_id, msg.value() or b"")
                    stats.delivered += 1
                    if metrics:
                        metrics.outcome("delivered")
                except Rejected as exc:
                    if metrics:
                        metrics.outcome("rejected")
                    record = {"stage": f"delivery:{sink.name}", "recipient": partner, "event_id": event_id,
                              "status": exc.status, "reason": exc.reason, "topic": msg.topic(),
                              "partition": msg.partition(), "offset": msg.offset()}
                    dlq.produce(DLQ, key=event_id.encode(), value=json.dumps(record).encode())
                    stats.dead_lettered += 1
                delivered_ids.append(key)
            # Durable first (file renamed, dead letters acknowledged), then remembered, then committed:
            # a crash in between repeats the batch and the seen-set drops the repeats.
            sink.flush()
            if dlq.flush(30):
                raise SgbusError("dead letters were not acknowledged by Kafka")
            for key in delivered_ids:
                seen.add(key)
            consumer.commit(asynchronous=False)
    finally:
        sink.flush()
        consumer.close()
    return stats
