"""confluent-kafka helpers outside Faust: idempotent publishing and reading a topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bus.exceptions import StackError
from bus.security.kafka_access import KafkaAccess


def idempotent_producer(access: KafkaAccess) -> Producer:
    return Producer(access.librdkafka_producer(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                                  "log_level": 3}))


def produce_all(producer: Producer, records: list[tuple[str, bytes, bytes]], timeout_s: float = 60.0) -> int:
    """Produce (topic, key, value) records and wait until every one is acknowledged."""
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout_s)
    if remaining or errors:
        raise StackError(f"{remaining} records unacknowledged, {len(errors)} failed: {errors[:1]}")
    return len(records)


def committed_reader(access: KafkaAccess, group: str, *, eof: bool = False) -> Consumer:
    """A consumer of committed records that commits nothing. Callers assign partitions rather
    than subscribe, so the group is never joined and READ on the topic is all it needs. With
    `eof`, reaching the end of a partition is reported (and an empty one answers quickly)."""
    extra = {"enable.partition.eof": True, "fetch.wait.max.ms": 50} if eof else {}
    return Consumer(access.librdkafka(**{
        "group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed", "log_level": 3,
        **extra,
    }))


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    tmd = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if tmd is None or tmd.error is not None:
        raise StackError(f"topic {topic} does not exist")
    return list(tmd.partitions)


def read_topic(
    access: KafkaAccess, topic: str, *, max_messages: int | None = None, timeout_s: float = 10.0,
    until: Callable[[list[bytes]], bool] | None = None, group: str = "sgbus-reader", to_end: bool = False,
    whole: bool = False,
) -> list[bytes]:
    """Every value in `topic` from the beginning (no consumer group, nothing committed), until
    `max_messages`, `until(values)` holds, `timeout_s` passes or, with `to_end`, the end of
    every partition is reached (a snapshot of what is there now). `whole`: StackError unless
    every partition's end was reached (a caller that decides from all of it, not a sample)."""
    _, records = _read(access, topic, max_messages=max_messages, timeout_s=timeout_s, until=until, group=group,
                       to_end=to_end or whole, whole=whole)
    return [value for _, _, _, value in records]


def read_keyed(access: KafkaAccess, topic: str, *, timeout_s: float = 10.0,
               group: str = "sgbus-reader") -> tuple[int, list[tuple[int, bytes | None, bytes]]]:
    """How many partitions `topic` has, and (partition, key, value) of every record on it now."""
    count, records = _read(access, topic, timeout_s=timeout_s, group=group, to_end=True)
    return count, [(partition, key, value) for partition, _, key, value in records]


def read_placed(access: KafkaAccess, topic: str, *, timeout_s: float = 10.0,
                group: str = "sgbus-reader", whole: bool = False) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record on `topic` now (`whole`: as read_topic)."""
    _, records = _read(access, topic, timeout_s=timeout_s, group=group, to_end=True, whole=whole)
    return [(partition, offset, value) for partition, offset, _, value in records]


def _read(access: KafkaAccess, topic: str, *, max_messages: int | None = None, timeout_s: float,
          until: Callable[[list[bytes]], bool] | None = None, group: str,
          to_end: bool, whole: bool = False) -> tuple[int, list[tuple[int, int, bytes | None, bytes]]]:
    consumer = committed_reader(access, group, eof=to_end)
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        records: list[tuple[int, int, bytes | None, bytes]] = []
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if max_messages is not None and len(values) >= max_messages:
                break
            if until is not None and until(values):
                break
            if to_end and len(at_end) == len(partitions):
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition() or 0))
                continue
            at_end.discard(int(msg.partition() or 0))
            value = msg.value()
            if value is not None:
                values.append(value)
                records.append((int(msg.partition() or 0), int(msg.offset() or 0), msg.key(), value))
        if whole and len(at_end) < len(partitions):
            raise StackError(f"could not read {topic} to its end within {timeout_s:.0f} s "
                             f"({len(values)} records read); nothing was decided from part of it")
        return len(partitions), records
    except KafkaException as exc:
        raise StackError(f"reading {topic} failed: {exc}") from None
    finally:
        consumer.close()


def iter_lines(stream: Iterator[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.rstrip("\n")
