"""Benchmark load and observation: synthetic events ready to send, paced publishing, and what
the broker holds (end offsets, record timestamps, a partner consumer's receipt times)."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bus.exceptions import StackError
from bus.policy.data import Partnership
from bus.routing import candidates
from bus.security.kafka_access import KafkaAccess
from bus.topics import TopicSpec, create_topics, ingress_topic
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth

_EVENT_ID = re.compile(rb'"event_id":"([0-9a-f-]{36})"')


@dataclass(frozen=True)
class Prepared:
    """One synthetic event, serialised as a partner system would publish it."""

    topic: str
    key: bytes
    value: bytes
    event_id: str
    candidates: int  # audit records the pipe writes for it: one per candidate recipient


def prepare(partnership: Partnership, count: int, seed: int,
            sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[Prepared]:
    """`count` varied events of the subscribed types (every one is routed to someone), signed
    by their source organisation's key when `sign` is given (the bus dead-letters unsigned ones)."""
    subscribed = {t for s in partnership.subscriptions for t in s.event_types}
    out: list[Prepared] = []
    synth = Synth(seed=seed)
    while len(out) < count:
        for raw in synth.stream(min(5000, 2 * (count - len(out)))):
            if raw["event_type"] not in subscribed:
                continue
            if sign is not None:
                raw = sign(raw)
            event = parse_event_dict(raw)
            n = len(candidates(partnership, event.event_type, event.source.agency.value, event.source.org_id))
            out.append(Prepared(ingress_topic(event.source.agency), event.partition_key(),
                                json.dumps(raw).encode(), str(event.event_id), n))
            if len(out) == count:
                break
    return out


def bench_producer(access: KafkaAccess) -> Producer:
    """As a partner's publisher: idempotent, acks=all; linger 1 ms so latency is not padded."""
    return Producer(access.librdkafka_producer(**{
        "enable.idempotence": True, "acks": "all", "linger.ms": 1, "queue.buffering.max.messages": 500_000,
        "log_level": 3}))


def _produce(producer: Producer, rec: Prepared, errors: list[str]) -> None:
    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    while True:
        try:
            producer.produce(rec.topic, key=rec.key, value=rec.value, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def publish_all(producer: Producer, records: Iterable[Prepared]) -> None:
    """As fast as the client goes; returns once the broker has acknowledged every record."""
    errors: list[str] = []
    for rec in records:
        _produce(producer, rec, errors)
        producer.poll(0)
    _flush(producer, errors)


def publish_paced(producer: Producer, records: list[Prepared], rate: float) -> dict[str, float]:
    """Offer `rate` events/s on a fixed schedule; returns event id -> wall-clock send time."""
    errors: list[str] = []
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i, rec in enumerate(records):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[rec.event_id] = time.time()
        _produce(producer, rec, errors)
        producer.poll(0)
    _flush(producer, errors)
    return sent


def _flush(producer: Producer, errors: list[str]) -> None:
    remaining = producer.flush(120)
    if remaining or errors:
        raise StackError(f"benchmark publish: {remaining} unacknowledged, {len(errors)} failed")


class Broker:
    """Read-only views of topics by offsets and timestamps (no consumer group is committed)."""

    def __init__(self, access: KafkaAccess) -> None:
        self.access = access
        self._consumer = Consumer(access.librdkafka(**{"group.id": "sgbus-bench-observer",
                                   "enable.auto.commit": False, "log_level": 3}))

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str) -> list[TopicPartition]:
        md = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise StackError(f"topic {topic} does not exist")
        return [TopicPartition(topic, p) for p in sorted(md.partitions)]

    def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        ends = {}
        for topic in topics:
            for tp in self.partitions(topic):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                ends[(topic, tp.partition)] = high
        return ends

    def count(self, topics: Iterable[str]) -> int:
        return sum(self.end_offsets(topics).values())

    def count_committed(self, topics: Iterable[str], timeout_s: float = 120.0) -> int:
        """Records a read_committed consumer sees (end offsets also count transaction markers
        and aborted records)."""
        ends = {k: v for k, v in self.end_offsets(topics).items() if v > 0}
        c = Consumer(self.access.librdkafka(**{"group.id": "sgbus-bench-observer",
                      "enable.auto.commit": False, "isolation.level": "read_committed", "log_level": 3}))
        seen = 0
        try:
            tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends]
            c.assign(tps)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                seen += sum(1 for m in c.consume(5000, 0.2) if not m.error())
                positions = c.position([TopicPartition(t, p) for t, p in ends])
                if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions):
                    break
        finally:
            c.close()
        return seen

    def wait_count(self, topics: list[str], expected: int, timeout_s: float,
                   progress: Callable[[int], None] | None = None) -> int:
        """Poll end offsets until they sum to `expected`; returns the last count seen."""
        deadline = time.monotonic() + timeout_s
        last_report = 0.0
        seen = 0
        while time.monotonic() < deadline:
            seen = self.count(topics)
            if seen >= expected:
                return seen
            if progress is not None and time.monotonic() - last_report > 5:
                progress(seen)
                last_report = time.monotonic()
            time.sleep(0.1)
        return seen

    def last_timestamp(self, topics: Iterable[str]) -> float:
        """Latest record timestamp (seconds) among the last record of every partition."""
        latest = 0.0
        for (topic, partition), high in self.end_offsets(topics).items():
            if high == 0:
                continue
            c = Consumer(self.access.librdkafka(**{"group.id": "sgbus-bench-observer",
                          "enable.auto.commit": False, "log_level": 3}))
            try:
                c.assign([TopicPartition(topic, partition, high - 1)])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    msg = c.poll(0.5)
                    if msg is not None and not msg.error():
                        latest = max(latest, msg.timestamp()[1] / 1000)
                        break
            finally:
                c.close()
        return latest


def reset_topics(access: KafkaAccess, specs: list[TopicSpec], timeout_s: float = 60.0) -> None:
    """Delete and recreate `specs` so a phase starts from empty topics."""
    admin = AdminClient(access.librdkafka(log_level=0))
    names = {s.name for s in specs}
    existing = names & set(admin.list_topics(timeout=10).topics)
    if existing:
        for fut in admin.delete_topics(sorted(existing), operation_timeout=timeout_s).values():
            fut.result()
    deadline = time.monotonic() + timeout_s
    while names & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise StackError("benchmark: topics still listed after deletion")
        time.sleep(0.1)
    while True:  # a deleted topic's name can stay reserved briefly
        try:
            create_topics(access, specs)
            return
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class Receiver:
    """A partner-side consumer on delivery topics, noting when each delivery arrives."""

    access: KafkaAccess
    start_offsets: dict[tuple[str, int], int]
    #: topics read on the way (e.g. sg.events), not deliveries: only their record times are kept
    passing: frozenset[str] = frozenset()
    received: list[tuple[str, float]] = field(default_factory=list)
    #: (event id, topic, the record's timestamp, receipt time) of every record read, deliveries too
    stamps: list[tuple[str, str, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._run, name="bench-receiver", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # librdkafka's own fetch wait (500 ms): the broker answers a waiting fetch as soon as a
        # record arrives, so a shorter wait only adds empty fetches. At 5 ms this receiver sent ~80
        # a second and cost the broker ~0.15 of a core at 50 events/s, with the same receipt times
        # (copy -> receipt p50 7 ms against 6; docs/BENCHMARKS.md, session 18).
        c = Consumer(self.access.librdkafka(**{"group.id": "sgbus-bench-partner",
                      "enable.auto.commit": False, "log_level": 3}))
        try:
            c.assign([TopicPartition(t, p, off) for (t, p), off in self.start_offsets.items()])
            while not self._stop.is_set():
                # One message as soon as it arrives, then whatever else is already fetched:
                # consume(n, timeout) waits out its whole timeout unless n arrive, which padded
                # every measured latency by up to that timeout (a partner polls; it does not wait).
                first = c.poll(0.05)
                now = time.time()
                msgs = [first, *c.consume(1000, 0)] if first is not None else []
                for msg in msgs:
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    m = _EVENT_ID.search(value)
                    if not m:
                        continue
                    event_id, topic = m.group(1).decode(), str(msg.topic())
                    self.stamps.append((event_id, topic, msg.timestamp()[1] / 1000, now))
                    if topic not in self.passing:
                        self.received.append((event_id, now))
        finally:
            c.close()

    def wait_quiet(self, quiet_s: float = 1.0, timeout_s: float = 60.0) -> None:
        """Return once nothing new has arrived for `quiet_s`."""
        deadline = time.monotonic() + timeout_s
        last, since = len(self.received), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if len(self.received) != last:
                last, since = len(self.received), time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def hops(sent: dict[str, float], stamps: list[tuple[str, str, float, float]], via: str) -> dict[str, list[float]]:
    """Each delivery's latency in three hops (ms), from the records' timestamps (set by their
    producers when they sent them, on this same machine's clock): publish -> the worker sends the
    event to `via` (sg.events) -> the worker sends the partner's copy -> the partner receives it."""
    passed: dict[str, float] = {}
    for eid, topic, ts, _ in stamps:
        if topic == via:
            passed.setdefault(eid, ts)  # the first, if a repeat (at least once) wrote it again
    out: dict[str, list[float]] = {"to_events": [], "to_copy": [], "to_receipt": []}
    for eid, topic, ts, now in stamps:
        if topic == via or eid not in sent or eid not in passed:
            continue
        out["to_events"].append((passed[eid] - sent[eid]) * 1000)
        out["to_copy"].append((ts - passed[eid]) * 1000)
        out["to_receipt"].append((now - ts) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
