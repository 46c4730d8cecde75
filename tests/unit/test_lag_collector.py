"""The lag collector never makes a scrape wait on Kafka (a slow read would mark the process down)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bus.ops import lag as lag_module
from bus.ops.lag import Group, LagCollector


class _SlowCollector(LagCollector):
    """Reads from a script instead of Kafka: each read blocks until released."""

    def __init__(self) -> None:
        super().__init__(access=None, groups=[Group("all", "g")])  # type: ignore[arg-type]
        self.release = threading.Event()
        self.reads = 0

    def read(self) -> tuple[dict[tuple[str, str], int], bool]:
        self.reads += 1
        self.release.wait(10)
        return {("all", "sg.events"): self.reads}, True


def _read_finished(collector: LagCollector) -> None:
    deadline = time.monotonic() + 5
    while collector._read_at == float("-inf") and time.monotonic() < deadline:
        time.sleep(0.01)


def _values(collector: LagCollector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family in collector.collect():
        for sample in family.samples:
            out[sample.name + str(sorted(sample.labels.items()))] = sample.value
    return out


def test_a_scrape_during_a_slow_first_read_reports_the_lag_unreadable_without_waiting_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lag_module, "READ_WAIT_S", 0.05)
    collector = _SlowCollector()
    started = time.monotonic()
    values = _values(collector)
    assert time.monotonic() - started < 1
    assert values == {"sgbus_consumer_lag_readable[]": 0}
    collector.release.set()
    _read_finished(collector)
    assert _values(collector)["sgbus_consumer_lag[('consumer', 'all'), ('topic', 'sg.events')]"] == 1


def test_a_slow_later_read_does_not_hold_the_scrape_and_the_last_reading_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lag_module, "CACHE_S", 0.0)
    monkeypatch.setattr(lag_module, "READ_WAIT_S", 0.05)
    collector = _SlowCollector()
    collector.release.set()
    _values(collector)
    _read_finished(collector)
    collector.release.clear()  # the next read hangs, as a broker in trouble would make it
    time.sleep(0.01)  # the reading must be older than CACHE_S (0) for a new read to start
    started = time.monotonic()
    values = _values(collector)
    assert time.monotonic() - started < 1
    assert values["sgbus_consumer_lag_readable[]"] == 1
    assert values["sgbus_consumer_lag[('consumer', 'all'), ('topic', 'sg.events')]"] == 1
    assert collector.reads == 2  # exactly one read in flight, however many scrapes
    _values(collector)
    assert collector.reads == 2
    monkeypatch.setattr(lag_module, "STALE_S", 0.0)
    assert _values(collector)["sgbus_consumer_lag_readable[]"] == 0  # an overdue read: not trusted
    collector.release.set()


def test_a_read_that_answers_quickly_is_reported_by_the_scrape_that_started_it() -> None:
    collector = _SlowCollector()
    collector.release.set()
    assert _values(collector)["sgbus_consumer_lag[('consumer', 'all'), ('topic', 'sg.events')]"] == 1


def test_a_read_that_raises_reports_the_lag_unreadable() -> None:
    class Broken(LagCollector):
        def read(self) -> tuple[dict[tuple[str, str], int], bool]:
            raise RuntimeError("no client")

    values = _values(Broken(access=None))  # type: ignore[arg-type]
    assert values["sgbus_consumer_lag_readable[]"] == 0


def test_a_read_that_could_not_start_is_tried_again_by_the_next_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = _SlowCollector()
    collector.release.set()
    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError):
        _values(collector)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert _values(collector)["sgbus_consumer_lag[('consumer', 'all'), ('topic', 'sg.events')]"] == 1


class _Answered:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        return self.value


class _Admin:
    """A group that committed on sg.events (as an all-in-one worker did before sg.replay) and reads on."""

    def list_consumer_group_offsets(self, requests: list[Any], request_timeout: float | None = None) -> Any:
        from confluent_kafka import TopicPartition

        committed = [TopicPartition("sg.events", 0, 5), TopicPartition("sg.replay", 0, 2),
                     TopicPartition("sg.audit", 0, 1)]
        return {requests[0].group_id: _Answered(type("Offsets", (), {"topic_partitions": committed})())}


class _Watermarks:
    def get_watermark_offsets(self, tp: Any, timeout: float | None = None, cached: bool = False) -> tuple[int, int]:
        return 0, 10


def test_offsets_left_on_a_topic_the_group_reads_no_more_are_not_reported_as_lag() -> None:
    collector = LagCollector(access=None, groups=[Group("all", "g", left=frozenset({"sg.events"}))])  # type: ignore[arg-type]
    collector._clients = (_Admin(), _Watermarks())
    assert collector.read() == ({("all", "sg.replay"): 8, ("all", "sg.audit"): 9}, True)
    everything = LagCollector(access=None, groups=[Group("all", "g")])  # type: ignore[arg-type]
    everything._clients = (_Admin(), _Watermarks())
    assert everything.read()[0][("all", "sg.events")] == 5
