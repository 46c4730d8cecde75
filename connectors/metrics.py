"""Prometheus metrics of an inbound connector (`sgbus connector run --watch`), read from its running totals."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bus.ops.serve import serve_metrics
from bus.settings import Settings
from connectors.run import RunStats


class ConnectorCollector(Collector):
    def __init__(self, connector: str, org: str, stats: RunStats) -> None:
        self.connector, self.org, self.stats = connector, org, stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = [self.connector, self.org]
        files = CounterMetricFamily("sgbus_connector_files", "Files a connector has read",
                                    labels=["connector", "org_id", "outcome"])
        files.add_metric([*labels, "read"], self.stats.files)
        files.add_metric([*labels, "unreadable"], self.stats.bad_files)
        yield files
        records = CounterMetricFamily("sgbus_connector_records", "Records a connector has converted, by outcome",
                                      labels=["connector", "org_id", "outcome"])
        records.add_metric([*labels, "published"], self.stats.published)
        records.add_metric([*labels, "already_sent"], self.stats.already_sent)
        records.add_metric([*labels, "rejected"], self.stats.rejected)
        yield records


def serve_connector_metrics(settings: Settings, connector: str, org: str, stats: RunStats) -> str:
    registry = CollectorRegistry()
    registry.register(ConnectorCollector(connector, org, stats))
    _server, url = serve_metrics(registry, settings, "sgbus-connector", {"connector": connector, "org_id": org})
    return url
