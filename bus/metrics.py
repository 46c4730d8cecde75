"""Prometheus metrics (prefix sgbus_) on an injectable registry; labels never carry identifiers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_ingested = Counter(
            "sgbus_events_ingested_total", "Events accepted at ingest", ["agency", "event_type"], registry=r
        )
        self.events_rejected = Counter(
            "sgbus_events_rejected_total", "Events rejected at ingest", ["reason"], registry=r
        )
        self.policy_decisions = Counter(
            "sgbus_policy_decisions_total", "Policy decisions", ["outcome", "agreement"], registry=r
        )
        self.policy_eval_seconds = Histogram(
            "sgbus_policy_eval_seconds", "Time of one batched OPA query", registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.policy_overrides = Counter(
            "sgbus_policy_overrides_total", "Emergency overrides applied", ["agreement"], registry=r
        )
        self.policy_retries = Counter(
            "sgbus_policy_retries_total", "Batches held back because OPA could not answer", registry=r
        )
        self.deliveries = Counter("sgbus_deliveries_total", "Events delivered", ["partner"], registry=r)
        self.delivery_latency_seconds = Histogram(
            "sgbus_delivery_latency_seconds", "recorded_at to delivered", registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.dlq = Counter("sgbus_dlq_total", "Messages sent to sg.dlq", ["reason"], registry=r)
        self.audit_records = Counter("sgbus_audit_records_total", "Audit records written", registry=r)
        self.audit_stored = Counter(
            "sgbus_audit_stored_total", "Audit records chained into the audit store", registry=r
        )
        self.events_replayed = Counter(
            "sgbus_events_replayed_total", "Events a publisher sent again unchanged (not routed twice)", registry=r
        )
        self.redaction_unavailable = Counter(
            "sgbus_redaction_unavailable_total",
            "Ingest batches held because the free-text redactor could not be built (retried)", registry=r
        )
        self.overrides_refused = Counter(
            "sgbus_policy_overrides_refused_total",
            "Urgency blocks without a valid declaration by a registered role (routed without the override)",
            ["reason"], registry=r,
        )
        self.views_failed = Counter(
            "sgbus_views_failed_total", "Allowed shares whose view could not be built (kept for replay)",
            ["partner"], registry=r,
        )
        self.audit_heads_published = Counter(
            "sgbus_audit_heads_published_total", "Signed audit chain heads published to sg.audit.heads", registry=r
        )
        self.opa_up = Gauge("sgbus_opa_up", "1 when the last OPA query succeeded", registry=r)
        self.policy_revision = Gauge(
            "sgbus_policy_revision_info", "Policy revision of the last decision", ["revision"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics; returns the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_address[1])
