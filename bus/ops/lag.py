"""Consumer lag as a Prometheus collector: each process reports the lag of its own consumer groups,
read with its own principal (READ on a group and its topics implies the DESCRIBE this needs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.security.kafka_access import KafkaAccess

CACHE_S = 4.0  # scrapes within this of the last reading reuse it (the local stack scrapes every 5 s)


@dataclass(frozen=True)
class Group:
    """A consumer group to watch and the bounded name it is reported under (`stage` for the
    worker's stages, `delivery:<sink>` or `mailbox` for a partner's consumers)."""

    consumer: str
    group_id: str


class LagCollector(Collector):
    def __init__(self, access: KafkaAccess, groups: Iterable[Group] | None = None) -> None:
        self._access = access
        self._groups = list(groups or [])
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[tuple[str, str], int], bool] | None = None
        self._admin: Any = None
        self._consumer: Any = None

    def watch(self, group: Group) -> None:
        with self._lock:
            if group not in self._groups:
                self._groups.append(group)
                self._cached = None

    def _clients(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self._access.librdkafka(log_level=0))
            # A consumer outside any group (never subscribes): only for reading watermarks.
            self._consumer = Consumer(self._access.librdkafka(**{
                "group.id": "sgbus-lag-probe-unused", "enable.auto.commit": False, "log_level": 0}))
        return self._admin, self._consumer

    def read(self) -> tuple[dict[tuple[str, str], int], bool]:
        """(consumer, topic) -> messages not yet committed, summed over partitions; and whether
        every group could be read."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin, consumer = self._clients()
        lag: dict[tuple[str, str], int] = {}
        complete = True
        for group in self._groups:
            try:
                future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group.group_id)],
                                                           request_timeout=5)[group.group_id]
                partitions = future.result(timeout=10).topic_partitions or []
                for tp in partitions:
                    if tp.offset < 0:  # nothing committed for this partition yet
                        continue
                    _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                    key = (group.consumer, tp.topic)
                    lag[key] = lag.get(key, 0) + max(0, high - tp.offset)
            except Exception:  # the broker or the group is unreadable now: report what we have
                complete = False
        return lag, complete

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_S:
                lag, complete = self.read()
                self._cached = (now, lag, complete)
            _, lag, complete = self._cached
        family = GaugeMetricFamily("sgbus_consumer_lag", "Messages not yet committed by a consumer, per topic",
                                   labels=["consumer", "topic"])
        for (name, topic), value in sorted(lag.items()):
            family.add_metric([name, topic], value)
        yield family
        yield GaugeMetricFamily("sgbus_consumer_lag_readable", "1 when every watched group's lag could be read",
                                value=1 if complete else 0)
