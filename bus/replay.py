"""`sgbus replay --failed`: route again the allowed shares whose view could not be built."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from bus.audit.chain import AuditStore
from bus.kafka_io import idempotent_producer, produce_all, read_topic
from bus.records import PseudonymisedEvent
from bus.security.kafka_access import KafkaAccess
from bus.topics import DLQ, EVENTS


@dataclass
class ReplayReport:
    failed: int = 0
    already_delivered: int = 0
    replayed_events: int = 0
    replayed_shares: int = 0
    missing: list[str] = field(default_factory=list)


def _event_at(consumer: Consumer, partition: int, offset: int) -> PseudonymisedEvent | None:
    consumer.assign([TopicPartition(EVENTS, partition, offset)])
    for _ in range(20):
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        if msg.offset() != offset:
            return None  # gone (retention) or compacted away
        try:
            return PseudonymisedEvent.model_validate_json(msg.value() or b"")
        except ValueError:
            return None
    return None


def replay_failed(access: KafkaAccess, store: AuditStore, *, dry_run: bool = False) -> ReplayReport:
    """Find view_failed dead letters, skip shares the audit store shows as delivered since,
    and put each remaining event back on sg.events for just its missed recipients."""
    report = ReplayReport()
    wanted: dict[str, tuple[int, int, set[str]]] = {}
    for value in read_topic(access, DLQ, timeout_s=3.0):
        try:
            rec = json.loads(value)
        except ValueError:
            continue
        if rec.get("stage") != "route" or not any(r.get("code") == "view_failed" for r in rec.get("reasons", [])):
            continue
        report.failed += 1
        entry = wanted.setdefault(rec["ingest_id"], (int(rec["events_partition"]), int(rec["events_offset"]), set()))
        entry[2].add(str(rec["recipient"]))
    delivered = store.delivered(list(wanted))
    consumer = Consumer(access.librdkafka(**{"group.id": "sgbus-replay", "enable.auto.commit": False,
                                             "isolation.level": "read_committed", "log_level": 3}))
    out: list[tuple[str, bytes, bytes]] = []
    try:
        for ingest_id, (partition, offset, recipients) in sorted(wanted.items()):
            todo = sorted(r for r in recipients if (ingest_id, r) not in delivered)
            report.already_delivered += len(recipients) - len(todo)
            if not todo:
                continue
            event = _event_at(consumer, partition, offset)
            if event is None or str(event.ingest_id) != ingest_id:
                report.missing.append(ingest_id)
                continue
            replay = event.model_copy(update={"replay_for": todo})
            out.append((EVENTS, event.subject_key.encode(), replay.model_dump_json().encode()))
            report.replayed_events += 1
            report.replayed_shares += len(todo)
    finally:
        consumer.close()
    if out and not dry_run:
        produce_all(idempotent_producer(access), out)
    return report
