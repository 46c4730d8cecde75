"""Prometheus metrics (prefix sgbus_) on an injectable registry; labels never carry identifiers."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from bus.encompass import SchoolCalendar, is_notification, late

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: bounded categories of the policy's free-text deny reasons (policies/sgbus/share/share.rego)
DENY_REASONS = ("not_a_partner", "no_agreement", "conditions_not_met")


def deny_category(reasons: list[str]) -> str:
    first = reasons[0] if reasons else ""
    if first.startswith("recipient is not a partner"):
        return "not_a_partner"
    if first.startswith("no agreement covers"):
        return "no_agreement"
    return "conditions_not_met"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # The process's memory, CPU and open files (process_*), as on prometheus_client's default registry.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.registry = r = registry
        self._revision: str | None = None
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
            "sgbus_policy_eval_seconds", "Time to route one batch (decisions, views, audit records)", registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.policy_overrides = Counter(
            "sgbus_policy_overrides_total", "Emergency overrides applied", ["agreement"], registry=r
        )
        self.policy_cache = Counter(
            "sgbus_policy_cache_total", "Policy requests answered from the decision cache (hit) or by OPA (miss)",
            ["result"], registry=r)
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
        self.ingest_process_failed = Counter(
            "sgbus_ingest_process_failed_total",
            "Ingest batches held because ingest's own process stopped (SGBUS_INGEST_PROCESS; another is started "
            "and the batch prepared again)", registry=r
        )
        self.audit_process_failed = Counter(
            "sgbus_audit_process_failed_total",
            "Audit batches held because the audit process stopped (SGBUS_AUDIT_PROCESS; another is started and "
            "the batch stored again, without repeats)", registry=r
        )
        self.event_register_failed = Counter(
            "sgbus_event_register_failed_total",
            "Ingest batches held because the event id register (in the audit store) could not be written "
            "(retried, the log says why; nothing is shared meanwhile)", registry=r
        )
        self.audit_store_failed = Counter(
            "sgbus_audit_store_failed_total",
            "Audit batches held because the audit store could not be written (out of reach, or refusing; retried, "
            "the log says why)", registry=r
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
        self.policy_denials = Counter(
            "sgbus_policy_denials_total", "Shares denied, by category of the policy's first reason",
            ["reason"], registry=r,
        )
        self.e2e_latency_seconds = Histogram(
            "sgbus_e2e_latency_seconds", "Publish (ingress record time) to delivery on the partner's topic",
            ["event_type"], registry=r, buckets=LATENCY_BUCKETS,
        )
        self.encompass_notifications = Counter(
            "sgbus_encompass_notifications_total",
            "Police domestic-abuse notifications delivered to schools", registry=r,
        )
        self.encompass_deadline_missed = Counter(
            "sgbus_encompass_deadline_missed_total",
            "Police domestic-abuse notifications delivered to a school after the start of the next school day",
            registry=r,
        )
        self.audit_chain_length = Gauge(
            "sgbus_audit_chain_length", "Records in the audit chain at its last verification", registry=r
        )
        self.audit_chain_verified = Gauge(
            "sgbus_audit_chain_verified", "1 when the last verification of the audit chain passed, 0 when it "
            "failed (NaN until the first one)", registry=r
        )
        self.audit_chain_last_verified = Gauge(
            "sgbus_audit_chain_last_verified_timestamp_seconds", "When the audit chain was last verified",
            registry=r,
        )
        self.audit_chain_last_full_verified = Gauge(
            "sgbus_audit_chain_last_full_verified_timestamp_seconds",
            "When the whole audit chain was last walked and passed (between whole walks, only what was appended "
            "is walked)", registry=r,
        )
        self.concerns_raised = Counter(
            "sgbus_concerns_raised_total", "Multi-agency concerns raised, by the partnership's rule", ["rule"],
            registry=r)
        self.concern_failures = Counter(
            "sgbus_concern_failures_total", "Concern batches or raises that failed (logged; sharing goes on)",
            registry=r)
        self.concern_children = Gauge(
            "sgbus_concern_children", "Children with a picture in this worker's concern table", registry=r)
        self.concern_last_at = Gauge(
            "sgbus_concern_last_update_timestamp_seconds", "When the concern table last took a batch", registry=r)
        self.school_calendar_known_until = Gauge(
            "sgbus_school_calendar_known_until_timestamp_seconds",
            "The last day the partnership's school calendar has term dates for (NaN: not stated)", registry=r)
        self.school_calendar_known_until.set(float("nan"))
        # NaN until the audit stage's first verification: neither "failed" nor a length of 0.
        self.audit_chain_verified.set(float("nan"))
        self.audit_chain_length.set(float("nan"))
        self.audit_chain_last_verified.set(float("nan"))
        self.audit_chain_last_full_verified.set(float("nan"))
        self.policy_revision = Gauge(
            "sgbus_policy_revision_info", "Policy revision of the last decision", ["revision"], registry=r
        )

    def prime(self, agreements: list[str], partners: list[str], concern_rules: list[str] | None = None) -> None:
        """Create the label sets alerts watch, at 0: a counter series born at its first increment
        hides that increment from increase() (the first override would not alert)."""
        for agreement in agreements:
            self.policy_overrides.labels(agreement)
        for reason in DENY_REASONS:
            self.policy_denials.labels(reason)
        for result in ("hit", "miss"):
            self.policy_cache.labels(result)
        for partner in partners:
            self.deliveries.labels(partner)
        for rule in concern_rules or []:
            self.concerns_raised.labels(rule)

    def calendar_in_force(self, calendar: SchoolCalendar) -> None:
        known = calendar.known_until
        self.school_calendar_known_until.set(
            datetime.combine(known, datetime.min.time(), tzinfo=UTC).timestamp() if known else float("nan"))

    def revision_in_force(self, revision: str) -> None:
        """One series: the revision of the latest decision (an older one is dropped, not left at 1)."""
        if revision != self._revision:
            self.policy_revision.clear()
            self.policy_revision.labels(revision).set(1)
            self._revision = revision

    def delivered(self, *, event_type: str, recipient: str, recipient_agency: str, occurred_at: datetime,
                  published_at: datetime | None, calendar: SchoolCalendar, now: datetime | None = None) -> None:
        """Count one delivery to a partner's topic (labels: ids from the partnership's finite sets only)."""
        now = now or datetime.now(UTC)
        self.deliveries.labels(recipient).inc()
        if published_at is not None:
            self.e2e_latency_seconds.labels(event_type).observe(max(0.0, (now - published_at).total_seconds()))
        if is_notification(event_type, recipient_agency):
            self.encompass_notifications.inc()
            try:
                missed = late(calendar, occurred_at, now)
            except ValueError:  # a time the calendar cannot place: counted late, to be looked at
                missed = True
            if missed:
                self.encompass_deadline_missed.inc()

