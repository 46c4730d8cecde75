"""The all-in-one worker's librdkafka sends: a commit's flush waits for every record sent before
it (not for those sent while it waits), and a record refused for good stops the commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bus.agents.direct_producer import DirectProducer, Sent
from bus.agents.sends import SendFailed


class _Error:
    """A KafkaError as a delivery report carries it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class _Librdkafka:
    """confluent_kafka.Producer as far as DirectProducer uses it: records are queued, and their
    delivery reports are served by `poll` once the test has let them through (`written`)."""

    def __init__(self, full_once: bool = False) -> None:
        self.queued: list[tuple[str, bytes | None, Callable[..., None]]] = []
        self.ready: list[tuple[Callable[..., None], Any, _Message]] = []
        self.lock = threading.Lock()
        self.full_once = full_once
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
                on_delivery: Callable[..., None] | None = None) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("Local: Queue full")
        assert on_delivery is not None
        self.queued.append((topic, key, on_delivery))

    def written(self, index: int, error: str | None = None) -> None:
        topic, _key, callback = self.queued[index]
        with self.lock:
            self.ready.append((callback, _Error(error) if error else None, _Message(topic, 0, index)))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        with self.lock:
            ready, self.ready = self.ready, []
        for callback, err, msg in ready:
            callback(err, msg)
        if not ready and timeout:
            threading.Event().wait(min(timeout, 0.001))
        return len(ready)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def _producer(stub: _Librdkafka) -> DirectProducer:
    producer = DirectProducer({})
    producer._producer = stub  # type: ignore[assignment]
    return producer


def test_a_flush_waits_for_what_was_sent_before_it_and_not_for_what_comes_after() -> None:
    async def run() -> None:
        stub = _Librdkafka()
        producer = _producer(stub)
        await producer.send("sg.events", b"k", b"v1")
        await producer.send("sg.deliver.a", b"k", b"v2")
        flushing = asyncio.ensure_future(producer.flush())
        await asyncio.sleep(0.01)
        await producer.send("sg.audit", b"k", b"v3")  # sent while the flush waits: not its business
        stub.written(0)
        await asyncio.sleep(0.01)
        assert not flushing.done()  # one record sent before it is still in flight
        stub.written(1)
        await asyncio.wait_for(flushing, 5)
        assert producer.failure() is None
        later = asyncio.ensure_future(producer.flush())  # the record sent during the first flush
        await asyncio.sleep(0.01)
        assert not later.done()
        stub.written(2)
        await asyncio.wait_for(later, 5)

    asyncio.run(run())


def test_a_refused_record_is_reported_by_topic_and_stays_reported() -> None:
    async def run() -> None:
        stub = _Librdkafka()
        producer = _producer(stub)
        await producer.send("sg.deliver.a", b"k", b"v")
        await producer.send("sg.events", b"k", b"v")
        stub.written(0, "TOPIC_AUTHORIZATION_FAILED")
        stub.written(1)
        await asyncio.wait_for(producer.flush(), 5)
        failed = producer.failure()
        assert failed is not None and failed[0] == "sg.deliver.a"
        assert isinstance(failed[1], SendFailed) and str(failed[1]) == "TOPIC_AUTHORIZATION_FAILED"
        await asyncio.wait_for(producer.flush(), 5)
        assert producer.failure() == failed  # a later commit is refused too

    asyncio.run(run())


def test_a_position_is_where_the_broker_wrote_the_record_and_a_refusal_raises() -> None:
    async def run() -> None:
        stub = _Librdkafka()
        producer = _producer(stub)
        first = await producer.send("sg.events", b"k", b"v", position=True)
        second = await producer.send("sg.events", b"k", b"v", position=True)
        assert isinstance(first, Sent) and isinstance(second, Sent)
        stub.written(0)
        stub.written(1, "MSG_SIZE_TOO_LARGE")
        written = await asyncio.wait_for(first, 5)  # flushes, as the records were not yet reported
        assert (written.partition, written.offset) == (0, 0)
        with pytest.raises(SendFailed, match="MSG_SIZE_TOO_LARGE"):
            await asyncio.wait_for(second, 5)

    asyncio.run(run())


def test_a_full_queue_is_drained_and_the_record_queued_again() -> None:
    async def run() -> None:
        stub = _Librdkafka(full_once=True)
        producer = _producer(stub)
        await asyncio.wait_for(producer.send("sg.events", b"k", b"v"), 5)
        assert len(stub.queued) == 1 and stub.polls >= 1
        stub.written(0)
        await asyncio.wait_for(producer.flush(), 5)  # the refused attempt is not waited for
        assert producer.failure() is None

    asyncio.run(run())


def test_a_flush_with_nothing_in_flight_needs_no_thread() -> None:
    async def run() -> None:
        producer = _producer(_Librdkafka())
        before = threading.active_count()
        await asyncio.wait_for(producer.flush(), 1)
        assert threading.active_count() == before
        assert producer.failure() is None

    asyncio.run(run())


def test_close_before_any_send_creates_no_producer() -> None:
    producer = DirectProducer({"bootstrap.servers": "127.0.0.1:1"})
    assert producer.close() == 0
    assert producer._producer is None


def test_a_fatal_client_error_stops_the_next_commit_and_others_only_log() -> None:
    producer = _producer(_Librdkafka())

    class _ClientError(_Error):
        def __init__(self, name: str, fatal: bool) -> None:
            super().__init__(name)
            self._fatal = fatal

        def fatal(self) -> bool:
            return self._fatal

    producer._client_error(_ClientError("_ALL_BROKERS_DOWN", False))  # type: ignore[arg-type]
    assert producer.failure() is None  # librdkafka retries; a record it gives up on is reported
    producer._client_error(_ClientError("_FATAL", True))  # type: ignore[arg-type]
    failed = producer.failure()
    assert failed is not None and str(failed[1]) == "_FATAL"


def test_keys_are_partitioned_as_java_and_aiokafka_partition_them(tmp_path: Path) -> None:
    """librdkafka's default partitioner (CRC32) would move every child's records to other partitions
    than Faust's producer gave them; murmur2 keeps them (tests/integration/test_pipeline.py checks
    the partitions themselves)."""
    from bus.app import direct_producer_config
    from bus.security.kafka_access import KafkaAccess

    access = KafkaAccess("127.0.0.1:1", "sgbus-all", "pw", tmp_path / "ca.pem")
    assert direct_producer_config(access, "sgbus-all", 1.0)["partitioner"] == "murmur2_random"


def test_every_producer_the_bus_builds_partitions_keys_as_java_does(tmp_path: Path) -> None:
    """Replays, connectors, the gateway and the CLI publish through librdkafka too: each builds
    its producer from `librdkafka_producer`, which names Java's partitioner."""
    import re

    from bus.security.kafka_access import KafkaAccess

    access = KafkaAccess("127.0.0.1:1", "sgbus-all", "pw", tmp_path / "ca.pem")
    assert access.librdkafka_producer(acks="all")["partitioner"] == "murmur2_random"
    root = Path(__file__).resolve().parents[2]
    built = [(path.relative_to(root), line) for pkg in ("bus", "connectors", "bench")
             for path in (root / pkg).rglob("*.py")
             for line in path.read_text().splitlines() if re.search(r"\bProducer\(\w+\.librdkafka\(", line)]
    assert built == [], built
