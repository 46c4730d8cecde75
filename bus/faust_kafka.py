"""A Faust app whose Kafka consumer waits at most `fetch_max_wait_ms` for a fetch (Faust
0.15.3 hard-codes 1,500 ms) and lingers `fetch_linger_ms` for more while records flow
(bus/fetch_linger.py), and which, without tables, starts without Faust's one-second wait for
them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import faust
from faust.tables.manager import TableManager
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, TransportT

from bus import logs
from bus.agents.direct_producer import DirectProducer
from bus.agents.sends import SendFailed, SendLedger
from bus.fetch_linger import FetchLinger

log = logs.get("sgbus.worker")

DEFAULT_FETCH_MAX_WAIT_MS = 1500  # Faust's own value
DEFAULT_FETCH_LINGER_MS = 0  # aiokafka's own behaviour: a fetch returns at the first record


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its Fetcher when the consumer starts, i.e. after this returns.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return consumer

    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the consumer, which creates its fetcher
        linger_ms = getattr(self.app, "fetch_linger_ms", DEFAULT_FETCH_LINGER_MS)
        if linger_ms:
            consumer: Any = self._consumer
            FetchLinger(consumer._fetcher, linger_ms=linger_ms).install()


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # At-least-once: Faust has just flushed the producer. If a send since the last commit
        # was refused, committing would lose its record: stop instead (as Faust does when an
        # attached send fails); the restarted worker reads the batch again and resends it.
        ledger: SendLedger | None = getattr(self.app, "sends", None)
        failed = ledger.failure() if ledger is not None else None
        direct: DirectProducer | None = getattr(self.app, "direct", None)
        if direct is not None and failed is None:
            await direct.flush()  # its records are not in Faust's producer, which Faust has just flushed
            failed = direct.failure()
        if failed is not None:
            topic, error = failed
            # librdkafka's refusals come as SendFailed naming the broker's error code
            what = str(error) if isinstance(error, SendFailed) else type(error).__name__
            log.error("send_failed_not_committing", topic=topic, error=what)
            await self.crash(SendFailed(f"a record for {topic} was not written ({what}); "
                                        "nothing after it is committed"))
            return False
        return bool(await super()._commit(offsets))


class _Producer(driver.Producer):
    def _settings_extra(self) -> Any:
        # Faust asks for acks=all and idempotence only inside transactions (exactly-once); the
        # at-least-once sharing worker wants them too, so a send retried after a broker loss is
        # written once. Not in an app with a table (the concern stage): with it, the table's
        # recovery after a SIGKILL came back empty in one full run; that stage's raises are
        # idempotent by their derived ids anyway.
        if self.app.in_transaction or self.app.tables:
            return super()._settings_extra()
        return {"acks": "all", "enable_idempotence": True}


class _Transport(driver.Transport):
    Consumer: ClassVar[type[Any]] = _Consumer
    Producer: ClassVar[type[Any]] = _Producer


class _TableManager(TableManager):
    async def on_start(self) -> None:
        # Faust sleeps a second here for tables to be registered. An app's tables are declared
        # when its agents are registered, before it starts; with none (the sharing pipe's
        # stages) there is nothing to wait for, and every start (a restart after a crash
        # included) is a second sooner. The concern stage, which has a table, keeps the wait.
        if len(self):
            await super().on_start()
            return
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class App(faust.App):
    """faust.App with a configurable consumer fetch wait.

    Why it matters: aiokafka keeps one fetch request in flight per broker, and a partition that
    still had unread records when that request was built is left out of it, so its next records
    wait until the request returns: up to the fetch wait when the other partitions are idle.
    In one worker consuming ingress, sg.events and sg.audit, that wait landed on most events.
    """

    def __init__(self, id: str, *, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
                 fetch_linger_ms: int = DEFAULT_FETCH_LINGER_MS, **options: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # A linger longer than the fetch wait would make a busy worker's fetches wait longer than
        # an idle one's: the fetch wait is the longest any fetch waits.
        self.fetch_linger_ms = min(fetch_linger_ms, fetch_max_wait_ms)
        #: at-least-once sends since the last commit (bus/agents/pipeline.py tracks them)
        self.sends = SendLedger()
        #: the all-in-one worker's sends, through librdkafka (bus/app.py create_app sets it)
        self.direct: DirectProducer | None = None
        options.setdefault("TableManager", _TableManager)
        super().__init__(id, **options)

    def _new_transport(self) -> TransportT:
        if self.conf.broker_consumer[0].scheme not in {"kafka", "aiokafka"}:
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)
