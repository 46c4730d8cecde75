"""`sgbus replay --failed`: route again the allowed shares whose view could not be built (read
from where the dead letter says the event is, sg.events or sg.replay; put on sg.replay)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from bus.audit.chain import AuditStore
from bus.kafka_io import committed_reader, idempotent_producer, produce_all, read_placed, read_topic
from bus.records import PseudonymisedEvent
from bus.security.kafka_access import KafkaAccess
from bus.topics import DLQ, EVENTS, REPLAY


@dataclass
class ReplayReport:
    failed: int = 0
    already_delivered: int = 0
    replayed_events: int = 0
    replayed_shares: int = 0
    #: shares a replay not routed yet already carries (left to it)
    already_replayed: int = 0
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


@dataclass
class FailedShares:
    """What the view_failed dead letters claim of one event: every place it is said to be (in the
    order of the dead letters) and the recipients whose view failed."""

    places: list[tuple[str, int, int]] = field(default_factory=list)
    recipients: set[str] = field(default_factory=set)
    #: where each recipient's view failed: (recipient, topic, partition, offset) of the event routed
    failed_at: set[tuple[str, str, int, int]] = field(default_factory=set)


def failed_shares(dlq_values: Iterable[bytes]) -> tuple[int, dict[str, FailedShares]]:
    """The view_failed dead letters among sg.dlq's records (how many, and per ingest id).

    sg.dlq is written by several principals (a partner's delivery connector among them): take
    nothing from it on trust. A record counts only if well formed, and it can point only into
    sg.events or sg.replay (an ingress record shaped like an event must never be replayed); the
    caller also checks the ingest id of the event found there and that the audit store holds
    the view_failed claimed."""
    count, wanted = 0, dict[str, FailedShares]()
    for value in dlq_values:
        try:
            rec = json.loads(value)
            if rec.get("stage") != "route" or not any(r.get("code") == "view_failed" for r in rec["reasons"]):
                continue
            ingest_id, recipient = str(uuid.UUID(str(rec["ingest_id"]))), str(rec["recipient"])
            partition, offset = int(rec["events_partition"]), int(rec["events_offset"])
            topic = rec.get("events_topic", EVENTS)  # written before sg.replay existed: sg.events
            if topic not in (EVENTS, REPLAY):
                continue
        except Exception:  # noqa: S112 - anything can be written to sg.dlq (1e999, deep nesting): skip it
            continue
        count += 1
        entry = wanted.setdefault(ingest_id, FailedShares())
        if (topic, partition, offset) not in entry.places:
            entry.places.append((topic, partition, offset))
        entry.recipients.add(recipient)
        entry.failed_at.add((recipient, topic, partition, offset))
    return count, wanted


#: a share put on sg.replay: (ingest id, recipient) -> where each replay of it is (partition, offset)
Replays = dict[tuple[str, str], list[tuple[int, int]]]


def replays_on_topic(placed: Iterable[tuple[int, int, bytes]]) -> Replays:
    """Where each (ingest id, recipient) share was put on sg.replay."""
    found: Replays = {}
    for partition, offset, value in placed:
        try:
            rec = json.loads(value)
            ingest_id = str(uuid.UUID(str(rec["ingest_id"])))
            for r in rec.get("replay_for") or []:
                found.setdefault((ingest_id, str(r)), []).append((partition, offset))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return found


def pending(shares: FailedShares, ingest_id: str, replays: Replays) -> set[str]:
    """The recipients of a share already on sg.replay and not routed yet: a replay of it that no
    view_failed dead letter names (a replay routed and failed again is named by the dead letter
    it caused; one delivered shows in the audit store, checked by the caller). Replaying again
    meanwhile would deliver twice once both are routed."""
    return {r for r in shares.recipients
            if any((r, REPLAY, partition, offset) not in shares.failed_at
                   for partition, offset in replays.get((ingest_id, r), []))}


#: how long replay may take to read sg.dlq, and sg.replay, each to its end
READ_S = 60.0


def replay_failed(access: KafkaAccess, store: AuditStore, *, dry_run: bool = False) -> ReplayReport:
    """Find view_failed dead letters, skip shares the audit store shows as delivered since,
    and put each remaining event on sg.replay (which every route agent reads) for just its
    missed recipients."""
    report = ReplayReport()
    # Both read to their ends or not at all: a dead letter missed under-replays, a
    # pending replay missed is replayed again (delivered twice once both are routed).
    report.failed, wanted = failed_shares(read_topic(access, DLQ, timeout_s=READ_S, whole=True))
    failed = store.view_failed(list(wanted))
    for ingest_id, shares in wanted.items():
        shares.recipients &= {r for i, r in failed if i == ingest_id}
    delivered = store.delivered(list(wanted))
    replays = replays_on_topic(read_placed(access, REPLAY, timeout_s=READ_S, whole=True)) if wanted else {}
    consumer = committed_reader(access, "sgbus-replay")
    out: list[tuple[str, bytes, bytes]] = []
    try:
        for ingest_id, shares in sorted(wanted.items()):
            todo = sorted(r for r in shares.recipients if (ingest_id, r) not in delivered)
            report.already_delivered += len(shares.recipients) - len(todo)
            waiting = pending(shares, ingest_id, replays)
            report.already_replayed += sum(1 for r in todo if r in waiting)
            todo = [r for r in todo if r not in waiting]
            if not todo:
                continue
            # The first place that still holds it (the original may be past its retention, a
            # replay of it not yet); only a record with the ingest id claimed counts.
            event = next((e for e in (_event_at(consumer, *place) for place in shares.places)
                          if e is not None and str(e.ingest_id) == ingest_id), None)
            if event is None:
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
