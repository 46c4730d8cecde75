"""The all-in-one worker's sends through librdkafka (confluent-kafka) rather than Faust's aiokafka
producer: a commit waits for every record sent before it, and stops at the first one refused."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, cast

from confluent_kafka import KafkaError, Producer

from bus import logs
from bus.agents.sends import SendFailed

log = logs.get("sgbus.worker")

#: how long a waiting flush blocks in librdkafka before it looks again (the thread's poll)
_POLL_S = 0.005


class Sent:
    """Where a record was written, once it is: `await sent` waits for it (flushing if need be)
    and then has `partition` and `offset`; SendFailed if the broker refused it."""

    __slots__ = ("_producer", "error", "offset", "partition")

    def __init__(self, producer: DirectProducer) -> None:
        self._producer = producer
        self.partition: int | None = None
        self.offset: int | None = None
        self.error: KafkaError | None = None

    def __await__(self) -> Generator[Any, None, Sent]:
        return self._written().__await__()

    async def _written(self) -> Sent:
        if self.offset is None and self.error is None:
            await self._producer.flush()
        if self.error is not None or self.offset is None:
            raise SendFailed(f"a record was not written ({_describe(self.error)})")
        return self


def _describe(error: KafkaError | None) -> str:
    # The error's name only: its message can echo the broker's text, never a record's content,
    # but the name is all an operator needs to look it up.
    return error.name() if error is not None else "no acknowledgement"


class DirectProducer:
    """An idempotent librdkafka producer (acks=all) for the at-least-once worker's sends.

    Why: with aiokafka, each send cost the worker's event loop ~25-50 µs of Python (building and
    queueing the record, then its future's callbacks), several per event (sg.events, a copy per
    partner, audit, dead letters): the largest piece of the loop left (docs/BENCHMARKS.md).
    librdkafka queues a record in ~2 µs and builds, compresses, encrypts and sends its requests
    in its own threads, outside the GIL.

    Commits: Faust's consumer asks `flush()` before it commits consumed offsets
    (bus/faust_kafka.py). A flush waits for every record produced before it was called (not for
    those produced while it waits: under steady load the queue is never empty), then
    `failure()` names the first record refused for good, and the worker stops uncommitted,
    exactly as with aiokafka's futures (bus/agents/sends.py)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = {**config, "error_cb": self._client_error}
        self._producer: Producer | None = None
        # A flush waits in this thread, not the default pool's: a wait on a broker that is down
        # must not hold a thread ingest, the event id register or the audit walk need.
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="sgbus-sends")
        self._lock = threading.Lock()
        # Records in flight per epoch; a flush starts a new epoch and waits for the ones before.
        self._epoch = 0
        self._in_flight: dict[int, int] = {0: 0}
        self._on_delivery = partial(self._delivered, 0)
        self._failed: tuple[str, BaseException] | None = None
        self._closed = False

    @property
    def _rk(self) -> Producer:
        if self._producer is None:
            self.start()
        assert self._producer is not None
        return self._producer

    def start(self) -> None:
        """Create the producer (it connects in its own threads): at the worker's start, or at the
        first send."""
        if self._producer is None:
            self._producer = Producer(self._config)

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None, *, position: bool = False) -> Sent | None:
        """Queue one record; with `position`, a Sent that tells where it was written."""
        sent = Sent(self) if position else None
        while True:
            # The epoch only moves in this (the event loop's) thread; the lock is for the
            # delivery reports, served in a flush's thread.
            epoch = self._epoch
            callback = self._on_delivery if sent is None else partial(self._delivered_at, epoch, sent)
            with self._lock:
                self._in_flight[epoch] += 1
            try:
                self._rk.produce(topic, value, key, headers=cast(Any, headers), on_delivery=callback)
                return sent
            except BufferError:  # librdkafka's queue is full: let it drain, then queue again
                self._settle(epoch)
                await asyncio.get_running_loop().run_in_executor(self._waiter, self._rk.poll, 0.1)
            except BaseException:
                self._settle(epoch)
                raise

    def _settle(self, epoch: int) -> None:
        with self._lock:
            self._in_flight[epoch] -= 1
            if self._in_flight[epoch] == 0 and epoch != self._epoch:
                del self._in_flight[epoch]

    def _delivered(self, epoch: int, err: KafkaError | None, msg: Any) -> None:
        # In whichever thread polls (a flush's): only the lock and plain assignments.
        if err is not None:
            self._fail(str(msg.topic()), err)
        self._settle(epoch)

    def _fail(self, topic: str, err: KafkaError) -> None:
        with self._lock:
            if self._failed is None:  # the first stays reported
                self._failed = (topic, SendFailed(_describe(err)))

    def _client_error(self, err: KafkaError) -> None:
        """librdkafka's errors outside any one record (brokers down, authentication, a fatal
        idempotence error): logged by name; a fatal one stops the next commit, as the records
        it fails would anyway."""
        fatal = bool(err.fatal())
        if fatal:
            log.error("librdkafka_fatal_error", error=_describe(err))
            self._fail("every topic (the producer failed)", err)
        else:  # librdkafka retries (a broker down, a connection lost); a record it gives up on is reported
            log.warning("librdkafka_error", error=_describe(err))

    def _delivered_at(self, epoch: int, sent: Sent, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            sent.partition, sent.offset = int(msg.partition()), int(msg.offset())
        else:
            sent.error = err
        self._delivered(epoch, err, msg)

    def _waiting_before(self, epoch: int) -> int:
        with self._lock:
            return sum(n for e, n in self._in_flight.items() if e <= epoch)

    def _wait_before(self, epoch: int) -> None:
        while self._waiting_before(epoch) and not self._closed:
            self._rk.poll(_POLL_S)

    async def flush(self) -> None:
        """Wait until every record queued so far is written or refused (`failure()` says which)."""
        with self._lock:
            epoch = self._epoch
            self._epoch += 1
            self._in_flight[self._epoch] = 0
            self._on_delivery = partial(self._delivered, self._epoch)
            if self._in_flight[epoch] == 0:
                del self._in_flight[epoch]
        if self._waiting_before(epoch):
            await asyncio.get_running_loop().run_in_executor(self._waiter, self._wait_before, epoch)
        else:
            self._rk.poll(0)  # serve whatever reports are due, without a thread hop

    def failure(self) -> tuple[str, BaseException] | None:
        """(topic, error) of the first record refused for good; None when none has."""
        return self._failed

    def close(self, timeout_s: float = 10.0) -> int:
        """At the worker's exit, after its last commit: give what is queued `timeout_s` to go out.
        Returns how many records were left unwritten (their offsets were never committed)."""
        if self._closed:
            return 0
        self._closed = True
        self._waiter.shutdown(wait=False, cancel_futures=True)
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))
