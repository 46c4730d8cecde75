"""`sgbus replay --failed`: route again the allowed shares whose view could not be built (read
from sg.events, where the dead letter says the event is; put on sg.replay)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from bus.audit.chain import AuditStore
from bus.kafka_io import committed_reader, idempotent_producer, produce_all, read_topic
from bus.records import PseudonymisedEvent
from bus.security.kafka_access import KafkaAccess
from bus.topics import DLQ, EVENTS, REPLAY


@dataclass
class ReplayReport:
    failed: int = 0
    already_delivered: int = 0
    replayed_events: int = 0
    replayed_shares: int = 0
    missing: list[str] = field(default_factory=list)


def _event_at(consumer: Consumer, topic: str, partition: int, offset: int) -> PseudonymisedEvent | None:
    consumer.assign([TopicPartition(topic, partition, offset)])
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
    and put each remaining event on sg.replay (which every route agent reads) for just its
    missed recipients."""
    report = ReplayReport()
    wanted: dict[str, tuple[str, int, int, set[str]]] = {}
    for value in read_topic(access, DLQ, timeout_s=10.0, to_end=True):
        # sg.dlq is written by several principals: take nothing from it on trust. A record
        # counts only if well formed and the audit store holds the view_failed it claims.
        try:
            rec = json.loads(value)
            if rec.get("stage") != "route" or not any(r.get("code") == "view_failed" for r in rec["reasons"]):
                continue
            ingest_id, recipient = str(uuid.UUID(str(rec["ingest_id"]))), str(rec["recipient"])
            partition, offset = int(rec["events_partition"]), int(rec["events_offset"])
            topic = rec.get("events_topic", EVENTS)  # written before sg.replay: sg.events
            if topic not in (EVENTS, REPLAY):
                continue
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        report.failed += 1
        entry = wanted.setdefault(ingest_id, (topic, partition, offset, set()))
        entry[3].add(recipient)
    failed = store.view_failed(list(wanted))
    for ingest_id, (_t, _p, _o, recipients) in wanted.items():
        recipients &= {r for i, r in failed if i == ingest_id}
    delivered = store.delivered(list(wanted))
    consumer = committed_reader(access, "sgbus-replay")
    out: list[tuple[str, bytes, bytes]] = []
    try:
        for ingest_id, (topic, partition, offset, recipients) in sorted(wanted.items()):
            todo = sorted(r for r in recipients if (ingest_id, r) not in delivered)
            report.already_delivered += len(recipients) - len(todo)
            if not todo:
                continue
            event = _event_at(consumer, topic, partition, offset)
            if event is None or str(event.ingest_id) != ingest_id:
                report.missing.append(ingest_id)
                continue
            replay = event.model_copy(update={"replay_for": todo})
            out.append((REPLAY, event.subject_key.encode(), replay.model_dump_json().encode()))
            report.replayed_events += 1
            report.replayed_shares += len(todo)
    finally:
        consumer.close()
    if out and not dry_run:
        produce_all(idempotent_producer(access), out)
    return report
