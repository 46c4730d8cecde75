"""Prometheus metrics of a delivery connector (labels: the partner id and the channel, both bounded)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

#: why an attempt failed and will be retried (webhook)
RETRY_REASONS = ("unreachable", "server_error", "throttled")


class DeliveryMetrics:
    def __init__(self, partner: str, channel: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.partner, self.channel = partner, channel
        self._outcomes = Counter(
            "sgbus_partner_deliveries_total", "Events handed to a partner's system, by outcome "
            "(delivered; rejected: answered 4xx, dead-lettered; duplicate: skipped, already delivered)",
            ["partner", "channel", "outcome"], registry=r)
        self._failures = Counter(
            "sgbus_partner_delivery_failures_total", "Delivery attempts that failed and are retried",
            ["partner", "channel", "reason"], registry=r)
        # At 0 from the start, so the first rejection or failure shows in increase() (and alerts).
        for outcome in ("delivered", "rejected", "duplicate"):
            self._outcomes.labels(partner, channel, outcome)
        for reason in RETRY_REASONS:
            self._failures.labels(partner, channel, reason)

    def outcome(self, outcome: str, n: int = 1) -> None:
        self._outcomes.labels(self.partner, self.channel, outcome).inc(n)

    def failure(self, reason: str) -> None:
        self._failures.labels(self.partner, self.channel, reason).inc()
