"""Consumer lag as a Prometheus collector: each process reports the lag of its own consumer groups,
read with its own principal (READ on a group and its topics implies the DESCRIBE this needs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus import logs
from bus.security.kafka_access import KafkaAccess

CACHE_S = 4.0  # scrapes within this of the last reading reuse it (the local stack scrapes every 5 s)
# A scrape waits at most this long for the read it started and otherwise reports the last reading: a
# read that takes longer than Prometheus's scrape timeout (the interval, 5 s) would mark the whole
# process down (`up` 0), when only the lag is unknown.
READ_WAIT_S = 1.5
STALE_S = 30.0  # a read still going after this long: the last figures are old, report them unreadable
log = logs.get("sgbus.lag")


@dataclass(frozen=True)
class Group:
    """A consumer group to watch and the bounded name it is reported under (`stage` for the
    worker's stages, `delivery:<sink>` or `mailbox` for a partner's consumers). `topic`: the
    topic the group is expected to read, so that a group that has never committed reports
    everything on it as not yet read (a school that never collects its mailbox shows)."""

    consumer: str
    group_id: str
    topic: str | None = None
    #: topics the group once read and reads no more (its offsets there stay until Kafka expires
    #: them, a week by default, and would show as lag growing for ever): not reported
    left: frozenset[str] = frozenset()


class LagCollector(Collector):
    def __init__(self, access: KafkaAccess, groups: Iterable[Group] | None = None,
                 keep: Callable[[Group], bool] | None = None) -> None:
        """`keep`: asked at each read whether a watched group is still reported (a partner whose
        partnership entry now says it collects another way, say)."""
        self._access = access
        self._keep = keep
        self._groups = list(groups or [])
        self._groups_lock = threading.Lock()  # held only to copy or extend the list
        self._read_lock = threading.Lock()  # one Kafka read at a time; other scrapes get the last one
        # (lag, every group read): nothing read yet counts as not readable
        self._cached: tuple[dict[tuple[str, str], int], bool] = ({}, False)
        self._read_at = float("-inf")  # when the last read finished
        self._started_at = float("inf")  # when the read in flight started (inf: none in flight)
        self._clients: tuple[Any, Any] | None = None

    def watch(self, group: Group) -> None:
        with self._groups_lock:
            if group not in self._groups:
                self._groups.append(group)

    def groups(self) -> list[Group]:
        """The groups a read reports, in the order they were watched."""
        with self._groups_lock:
            groups = list(self._groups)
        return [g for g in groups if self._keep is None or self._keep(g)]

    def _kafka(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        if self._clients is None:
            admin = AdminClient(self._access.librdkafka(log_level=0))
            # A consumer outside any group (never subscribes): only for reading watermarks.
            consumer = Consumer(self._access.librdkafka(**{
                "group.id": "sgbus-lag-probe-unused", "enable.auto.commit": False, "log_level": 0}))
            self._clients = (admin, consumer)
        return self._clients

    def read(self) -> tuple[dict[tuple[str, str], int], bool]:
        """(consumer, topic) -> messages not yet committed, summed over partitions; and whether
        every group could be read."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        admin, consumer = self._kafka()
        groups = self.groups()
        lag: dict[tuple[str, str], int] = {}
        complete = True
        for group in groups:
            try:
                future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group.group_id)],
                                                           request_timeout=5)[group.group_id]
                committed = [tp for tp in future.result(timeout=10).topic_partitions or []
                             if tp.offset >= 0 and tp.topic not in group.left]
                if not committed and group.topic:
                    meta = consumer.list_topics(group.topic, timeout=5).topics[group.topic]
                    for p in meta.partitions:
                        low, high = consumer.get_watermark_offsets(TopicPartition(group.topic, p), timeout=5,
                                                                   cached=False)
                        lag[(group.consumer, group.topic)] = lag.get((group.consumer, group.topic), 0) + high - low
                for tp in committed:
                    _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                    key = (group.consumer, tp.topic)
                    lag[key] = lag.get(key, 0) + max(0, high - tp.offset)
            except Exception as exc:  # the broker or the group is unreadable now: report what we have
                complete = False
                log.warning("lag_unreadable", consumer=group.consumer, error=type(exc).__name__)
        return lag, complete

    def _refresh(self, done: threading.Event) -> None:
        try:
            self._cached = self.read()
        except Exception as exc:  # e.g. the client could not be created: the lag is unknown, not zero
            self._cached = (self._cached[0], False)
            log.warning("lag_unreadable", error=type(exc).__name__)
        finally:
            self._read_at = time.monotonic()  # after the read: a slow read is not repeated at once
            self._started_at = float("inf")
            done.set()
            self._read_lock.release()

    def _latest(self) -> tuple[dict[tuple[str, str], int], bool]:
        """A fresh reading when Kafka answers within READ_WAIT_S, else the last one (a read that is
        still going finishes in the background, for a later scrape)."""
        now = time.monotonic()
        if now - self._read_at > CACHE_S and self._read_lock.acquire(blocking=False):
            self._started_at = now
            done = threading.Event()
            try:
                threading.Thread(target=self._refresh, args=(done,), name="sgbus-lag-read", daemon=True).start()
            except BaseException:  # no thread (resources short): a later scrape tries again
                self._started_at = float("inf")
                self._read_lock.release()
                raise
            done.wait(READ_WAIT_S)
        lag, complete = self._cached
        if time.monotonic() - self._started_at > STALE_S:  # the read in flight is overdue
            complete = False
        return lag, complete

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, complete = self._latest()
        family = GaugeMetricFamily("sgbus_consumer_lag", "Messages not yet committed by a consumer, per topic",
                                   labels=["consumer", "topic"])
        for (name, topic), value in sorted(lag.items()):
            family.add_metric([name, topic], value)
        yield family
        yield GaugeMetricFamily("sgbus_consumer_lag_readable", "1 when every watched group's lag could be read",
                                value=1 if complete else 0)
