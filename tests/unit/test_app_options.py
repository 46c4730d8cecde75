"""Faust options: worker state stays under SGBUS_HOME; the fetch wait reaches aiokafka."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bus.app import faust_options
from bus.faust_kafka import App
from bus.security.kafka_access import KafkaAccess
from bus.security.pki import PartnershipCA


def _access(tmp_path: Path) -> KafkaAccess:
    ca = PartnershipCA(tmp_path / "pki-home").ensure()
    return KafkaAccess("127.0.0.1:9092", "sgbus-worker", "not-a-real-secret", ca.cert_path)


def test_faust_data_goes_under_the_sgbus_home_not_the_working_directory(tmp_path: Path) -> None:
    opts = faust_options(_access(tmp_path), tmp_path / "home")
    app = App("sgbus-test", fetch_max_wait_ms=25, **opts)
    assert app.conf.datadir == (tmp_path / "home" / "faust" / "sgbus-test").resolve()
    assert (tmp_path / "home" / "faust").is_dir()  # Faust itself creates only the last level


def test_the_consumer_is_built_with_the_configured_fetch_wait_over_scram_and_tls(tmp_path: Path) -> None:
    app = App("sgbus-test", fetch_max_wait_ms=25, **faust_options(_access(tmp_path), tmp_path))

    async def build() -> Any:
        # aiokafka objects are created inside a running loop; nothing connects until start().
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        await consumer._client.close()
        return consumer

    consumer = asyncio.run(build())
    assert consumer._fetch_max_wait_ms == 25
    assert app.fetch_linger_ms == 0  # not asked for: aiokafka's own behaviour
    assert consumer._client._security_protocol == "SASL_SSL"
    assert consumer._client._sasl_mechanism == "SCRAM-SHA-512"
    assert consumer._client._ssl_context is not None


def test_only_records_marked_by_ingest_are_skipped_by_a_route_agent() -> None:
    from bus.agents.pipeline import ROUTED_AT_INGEST, routed_at_ingest

    assert routed_at_ingest(ROUTED_AT_INGEST) and routed_at_ingest(dict(ROUTED_AT_INGEST))
    # no header (an earlier release's ingest, a stage worker, or a replay): routed by the route agent
    assert not routed_at_ingest(None) and not routed_at_ingest([]) and not routed_at_ingest({})
    assert not routed_at_ingest([("sgbus-routed", b"something-else"), ("other", b"ingest")])


def test_the_all_in_one_route_agent_reads_only_replays_and_a_stage_route_agent_sg_events_too() -> None:
    from bus.topics import EVENTS, REPLAY, route_sources

    assert route_sources(route_at_ingest=True) == (REPLAY,)  # it routed what it ingested already
    assert route_sources(route_at_ingest=False) == (EVENTS, REPLAY)


def test_a_batch_waits_about_a_millisecond_when_quiet_and_the_whole_window_under_load() -> None:
    from bus.agents.batching import MIN_WINDOW_S, next_window

    assert next_window(1, 100, 0.05) == MIN_WINDOW_S  # one event at a time: go almost at once
    assert next_window(10, 100, 0.05) == pytest.approx(0.01)
    assert next_window(50, 100, 0.05) == next_window(100, 100, 0.05) == 0.05  # busy: full batches
    assert next_window(1, 20, 0.2, min_window_s=0.2) == 0.2  # the audit stage: always its window
    assert next_window(1, 100, 0.0005) == 0.0005  # never longer than the window asked for


def test_a_crashed_workers_partitions_are_handed_on_after_the_session_timeout_not_faust_s_minute(
        tmp_path: Path) -> None:
    app = App("sgbus-test", **faust_options(_access(tmp_path), tmp_path, session_timeout_s=15.0))
    assert app.conf.broker_session_timeout == 15.0
    assert faust_options(_access(tmp_path), tmp_path)["broker_session_timeout"] < 60


def _start_calls(app: App) -> list[str]:
    """What the app's table manager does on start, recorded instead of done."""
    calls: list[str] = []
    manager: Any = app.tables

    async def sleep(seconds: float) -> None:
        calls.append(f"sleep {seconds}")

    async def update_channels() -> None:
        calls.append("update channels")

    async def start_recovery() -> None:
        calls.append("start recovery")

    manager.sleep = sleep
    manager._update_channels = update_channels
    manager.recovery.start = start_recovery
    asyncio.run(manager.on_start())
    return calls


def test_an_app_without_tables_starts_without_faust_s_one_second_wait_for_them(tmp_path: Path) -> None:
    assert _start_calls(App("sgbus-test", **faust_options(_access(tmp_path), tmp_path))) == [
        "update channels", "start recovery"]


def test_an_app_with_a_table_keeps_the_wait(tmp_path: Path) -> None:
    app = App("sgbus-test", **faust_options(_access(tmp_path), tmp_path))
    app.Table("concern-test", default=int)
    assert _start_calls(app) == ["sleep 1.0", "update channels", "start recovery"]


@pytest.mark.parametrize("stage", ["all", "ingest", "concern"])
def test_every_worker_app_lingers_its_fetches_as_set(tmp_path: Path, stage: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import bus.agents.pipeline
    from bus.app import create_app
    from bus.settings import Settings

    monkeypatch.setattr(bus.agents.pipeline, "register", lambda *a, **k: None)  # agents: not this test's
    monkeypatch.delenv("SGBUS_FETCH_LINGER_MS", raising=False)  # the default, whatever the shell sets
    services: Any = type("S", (), {"settings": Settings(home=tmp_path, fetch_linger_ms=30)})()
    app = create_app(_access(tmp_path), services, stage)
    assert app.fetch_linger_ms == 30  # type: ignore[attr-defined]
    assert Settings(home=tmp_path).fetch_linger_ms == 20


def test_the_consumer_thread_lingers_its_fetchers_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from faust.transport.drivers import aiokafka as driver

    async def proc(assignment: Any, node_id: Any, request: Any) -> bool:
        return True

    fetcher = SimpleNamespace(_proc_fetch_request=proc)

    async def started(self: Any) -> None:  # aiokafka's consumer, as far as the linger needs it
        self._consumer = SimpleNamespace(_fetcher=fetcher, _fetch_max_wait_ms=25)

    monkeypatch.setattr(driver.AIOKafkaConsumerThread, "on_start", started)

    async def start(app: App) -> None:
        await app.consumer._new_consumer_thread().on_start()

    asyncio.run(start(App("sgbus-test", fetch_max_wait_ms=25, fetch_linger_ms=0,
                          **faust_options(_access(tmp_path), tmp_path))))
    assert fetcher._proc_fetch_request is proc  # no linger asked: aiokafka's own
    lingering = App("sgbus-test", fetch_max_wait_ms=25, fetch_linger_ms=40,
                    **faust_options(_access(tmp_path), tmp_path))
    assert lingering.fetch_linger_ms == 25  # never longer than the fetch wait
    asyncio.run(start(lingering))
    assert fetcher._proc_fetch_request is not proc


@pytest.mark.parametrize(("stage", "linger_s"), [("all", 0.0), ("concern", 0.0), ("ingest", 0.005), ("audit", 0.005)])
def test_at_least_once_apps_send_without_a_producer_linger(tmp_path: Path, stage: str, linger_s: float,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's sends leave together anyway; a linger only held each partner's copy back.
    The exactly-once stages keep theirs."""
    import bus.agents.pipeline
    from bus.app import create_app
    from bus.settings import Settings

    monkeypatch.setattr(bus.agents.pipeline, "register", lambda *a, **k: None)
    services: Any = type("S", (), {"settings": Settings(home=tmp_path)})()
    app = create_app(_access(tmp_path), services, stage)
    assert app.conf.producer_linger == linger_s


def test_every_way_out_of_the_worker_is_bounded_by_the_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only a signal: an agent's error that stops the worker arms the same timer (once), so a
    stop that hangs on a broken Kafka still ends within SGBUS_SHUTDOWN_GRACE_S."""
    import threading

    import faust

    from bus.worker import BoundedWorker

    armed: list[float] = []

    class _Timer:
        daemon = False

        def __init__(self, interval: float, function: Any, args: Any = ()) -> None:
            armed.append(interval)

        def start(self) -> None:
            pass

    monkeypatch.setattr(threading, "Timer", _Timer)
    monkeypatch.setattr(faust.Worker, "on_worker_shutdown", lambda self: None)
    worker = BoundedWorker.__new__(BoundedWorker)  # the hooks only, no app started
    worker.grace_s = 7.0
    worker.on_worker_shutdown()
    worker.on_worker_shutdown()
    assert armed == [7.0]


def test_the_producer_batches_up_to_256_kib_a_partition(tmp_path: Path) -> None:
    """aiokafka's 16 KiB held ~10 sg.events records, and a send to a full batch waits for the
    request in flight: a batch's events went out in several round trips."""
    app = App("sgbus-test", **faust_options(_access(tmp_path), tmp_path))

    async def build() -> Any:
        producer = app.producer._new_producer()  # type: ignore[attr-defined]  # created, not started
        await producer.client.close()
        return producer

    producer = asyncio.run(build())
    assert producer._message_accumulator._batch_size == 256 * 1024


@pytest.mark.parametrize(("stage", "setting", "direct"), [("all", True, True), ("all", False, False),
                                                          ("ingest", True, False), ("concern", True, False)])
def test_only_the_all_in_one_worker_sends_through_librdkafka(tmp_path: Path, stage: str, setting: bool, direct: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly-once stages send inside aiokafka transactions, and the concern stage's table writes
    through Faust: only the all-in-one worker's sends leave through librdkafka (unless turned off)."""
    import bus.agents.pipeline
    from bus.app import create_app
    from bus.settings import Settings

    monkeypatch.setattr(bus.agents.pipeline, "register", lambda *a, **k: None)
    services: Any = type("S", (), {"settings": Settings(home=tmp_path, librdkafka_sends=setting,
                                                        librdkafka_linger_ms=2.0)})()
    app = create_app(_access(tmp_path), services, stage)
    producer = app.direct  # type: ignore[attr-defined]
    assert (producer is not None) == direct
    if producer is not None:
        config = producer._config
        assert config["enable.idempotence"] is True and config["acks"] == "all" and config["linger.ms"] == 2.0
        assert config["security.protocol"] == "SASL_SSL"  # the same principal and TLS as its Faust clients
        assert producer._producer is None  # connected once the worker runs, not when the app is built


@pytest.mark.parametrize(("stage", "expected"), [("all", 1500), ("ingest", 4096), ("audit", 4096)])
def test_the_all_in_one_worker_buffers_as_set_and_stage_workers_as_faust_does(
        tmp_path: Path, stage: str, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deep backlog fills a stream's buffer: Faust's 4,096 records kept the all-in-one worker
    over 200 MB. Its topics' queues take the setting (the audit stage bounds its own read-ahead)."""
    import bus.agents.pipeline
    from bus.app import create_app
    from bus.settings import Settings

    monkeypatch.setattr(bus.agents.pipeline, "register", lambda *a, **k: None)
    monkeypatch.delenv("SGBUS_WORKER_STREAM_BUFFER", raising=False)
    monkeypatch.delenv("STREAM_BUFFER_MAXSIZE", raising=False)  # Faust's own variable would win over both
    services: Any = type("S", (), {"settings": Settings(home=tmp_path)})()
    app = create_app(_access(tmp_path), services, stage)
    assert app.conf.stream_buffer_maxsize == expected
    assert app.topic("sg.ingress.police").queue.maxsize == expected
    smaller: Any = type("S", (), {"settings": Settings(home=tmp_path, worker_stream_buffer=300)})()
    assert create_app(_access(tmp_path), smaller, "all").conf.stream_buffer_maxsize == 300
