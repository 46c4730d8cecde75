"""The Grafana dashboards, generated with grafana-foundation-sdk into deploy/grafana/ (committed;
a test fails if they are stale): `python -m bus.ops.dashboards` rewrites them."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders import stat as gs
from grafana_foundation_sdk.builders import timeseries as gt
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from bus.ops.monitoring import deploy_dir

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    #: True when a running bus with traffic always has data here (the live test insists on it);
    #: False for panels that show trouble or optional parts (overrides, retries, webhooks)
    data_expected: bool = True


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    partner_variable: bool = False
    tags: tuple[str, ...] = field(default=("sgbus",))


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


OVERVIEW = DashboardSpec("sgbus-overview", "sgbus - overview", "Is sharing happening, and is anything wrong?", (
    PanelSpec("Events ingested by agency", "Events accepted at ingest, per second.",
              (q(f"sum by (agency) (rate(sgbus_events_ingested_total[{RATE}]))", "{{agency}}"),), "ops"),
    PanelSpec("Deliveries by partner", "Events delivered to partners' topics, per second.",
              (q(f"sum by (partner) (rate(sgbus_deliveries_total[{RATE}]))", "{{partner}}"),), "ops"),
    PanelSpec("Policy decisions", "Allow and deny decisions per second.",
              (q(f"sum by (outcome) (rate(sgbus_policy_decisions_total[{RATE}]))", "{{outcome}}"),), "ops"),
    PanelSpec("End-to-end latency p95 by event type", "Publish (ingress record) to the partner's topic.",
              (q(f"histogram_quantile(0.95, sum by (le, event_type) (rate(sgbus_e2e_latency_seconds_bucket[{RATE}])))",
                 "{{event_type}}"),), "s"),
    PanelSpec("Dead letters (last hour) by reason", "Messages parked on sg.dlq; never dropped.",
              (q("sum by (reason) (increase(sgbus_dlq_total[1h]))", "{{reason}}"),), "short", "stat"),
    PanelSpec("OPA reachable", "1: workers' last policy query succeeded; 0: sharing has stopped (fail closed).",
              (q("min(sgbus_opa_up)"),), "short", "stat"),
    PanelSpec("Alerts firing", "Alerts firing now (details in Alertmanager or `sgbus status`).",
              (q('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),), "short", "stat",
              data_expected=False),
    PanelSpec("Multi-agency concerns raised (24h)", "Children who crossed a concern threshold, by rule "
              "(policies/data/concern.yaml); each goes to the MASH through DSA-MAC-001.",
              (q("sum by (rule) (increase(sgbus_concerns_raised_total[24h]))", "{{rule}}"),), "short", "stat"),
    PanelSpec("Encompass notifications late (24h)", "Police domestic-abuse notifications that reached a school "
              "after the start of the next school day.",
              (q("sum(increase(sgbus_encompass_deadline_missed_total[24h]))"),), "short", "stat"),
))

PARTNER = DashboardSpec("sgbus-partner", "sgbus - per-partner delivery", "What each partner receives, and whether "
                        "it collects it.", (
    PanelSpec("Deliveries to the partner's topic", "Events the bus delivered to sg.deliver.<partner>, per second.",
              (q(f'sum by (partner) (rate(sgbus_deliveries_total{{partner=~"$partner"}}[{RATE}]))', "{{partner}}"),),
              "ops"),
    PanelSpec("Encompass notifications to schools (24h)", "Domestic-abuse notifications delivered to schools.",
              (q("sum(increase(sgbus_encompass_notifications_total[24h]))"),), "short", "stat"),
    PanelSpec("Not yet collected (mailbox)", "Messages on the partner's topic its mailbox has not acknowledged.",
              (q('sum by (topic) (sgbus_consumer_lag{consumer="mailbox", topic=~"sg.deliver.($partner)"})', "{{topic}}"),),
              data_expected=False),
    PanelSpec("Not yet delivered (webhook / file connectors)", "Messages a delivery connector has not delivered.",
              (q('sum by (consumer, topic) (sgbus_consumer_lag{consumer=~"delivery:.*", topic=~"sg.deliver.($partner)"})',
                 "{{consumer}} {{topic}}"),), data_expected=False),
    PanelSpec("Connector deliveries by outcome", "delivered, rejected (4xx, dead-lettered), duplicate (skipped).",
              (q(f'sum by (partner, channel, outcome) (rate(sgbus_partner_deliveries_total{{partner=~"$partner"}}[{RATE}]))',
                 "{{partner}} {{channel}} {{outcome}}"),), "ops", data_expected=False),
    PanelSpec("Delivery attempts failing (retried)", "Webhook attempts that failed: unreachable, server_error, throttled.",
              (q(f'sum by (partner, channel, reason) (rate(sgbus_partner_delivery_failures_total{{partner=~"$partner"}}[{RATE}]))',
                 "{{partner}} {{reason}}"),), "ops", data_expected=False),
    PanelSpec("Gateway mailbox calls by status", "The partner's mailbox calls at the HTTPS gateway.",
              (q(f'sum by (partner, status) (rate(sgbus_gateway_requests_total{{route=~"/v1/mailbox.*", partner=~"$partner"}}[{RATE}]))',
                 "{{partner}} {{status}}"),), "reqps", data_expected=False),
), partner_variable=True)

POLICY = DashboardSpec("sgbus-policy", "sgbus - policy decisions", "What the partnership's agreements decide.", (
    PanelSpec("Decisions by agreement", "Allow/deny per agreement, per second.",
              (q(f"sum by (agreement, outcome) (rate(sgbus_policy_decisions_total[{RATE}]))",
                 "{{agreement}} {{outcome}}"),), "ops"),
    PanelSpec("Denials by reason", "not_a_partner, no_agreement, conditions_not_met.",
              (q(f"sum by (reason) (rate(sgbus_policy_denials_total[{RATE}]))", "{{reason}}"),), "ops"),
    PanelSpec("Policy query latency", "One batched OPA query, as the worker sees it.",
              (q(f"histogram_quantile(0.5, sum by (le) (rate(sgbus_policy_eval_seconds_bucket[{RATE}])))", "p50"),
               q(f"histogram_quantile(0.95, sum by (le) (rate(sgbus_policy_eval_seconds_bucket[{RATE}])))", "p95")), "s"),
    PanelSpec("OPA server latency p95", "OPA's own HTTP handling time.",
              (q(f'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{job="opa"}}[{RATE}])))',
                 "p95"),), "s"),
    PanelSpec("OPA availability", "Prometheus reaching OPA (up) and the workers' last query (sgbus_opa_up).",
              (q('up{job="opa"}', "scrape"), q("min(sgbus_opa_up)", "workers")), "short"),
    PanelSpec("Policy revision in force", "The signed bundle revision each worker decided with.",
              (q("count by (revision) (sgbus_policy_revision_info)", "{{revision}}"),), "short", "stat"),
    PanelSpec("Emergency overrides (24h)", "Shares widened by a verified urgent-risk declaration.",
              (q("sum by (agreement) (increase(sgbus_policy_overrides_total[24h]))", "{{agreement}}"),), "short",
              "stat", data_expected=False),
    PanelSpec("Batches held (OPA could not answer)", "Fail-closed retries; nothing shared, nothing lost.",
              (q(f"sum(rate(sgbus_policy_retries_total[{RATE}]))"),), "ops", data_expected=False),
))

PIPELINE = DashboardSpec("sgbus-pipeline", "sgbus - pipeline health", "Stages, lag, the audit chain and Kafka.", (
    PanelSpec("Processes up", "Every process Prometheus scrapes, by job.",
              (q("sum by (job) (up)", "{{job}}"),), "short"),
    PanelSpec("Consumer lag by stage and topic", "Messages not yet committed by each stage.",
              (q('sum by (consumer, topic) (sgbus_consumer_lag{consumer!~"delivery:.*|mailbox"})',
                 "{{consumer}} {{topic}}"),), "short"),
    PanelSpec("Audit chain length", "Records in the hash chain at the last verification.",
              (q('max(sgbus_audit_chain_length{stage=~"all|audit"})'),), "short", "stat"),
    PanelSpec("Audit chain verified", "1: the last verification passed (public keys only).",
              (q('min(sgbus_audit_chain_verified{stage=~"all|audit"})'),), "short", "stat"),
    PanelSpec("Since last audit verification", "Seconds since the chain last verified.",
              (q('time() - max(sgbus_audit_chain_last_verified_timestamp_seconds{stage=~"all|audit"})'),), "s", "stat"),
    PanelSpec("Audit records stored", "Records chained into the audit store, per second.",
              (q(f"sum(rate(sgbus_audit_stored_total[{RATE}]))"),), "ops"),
    PanelSpec("Kafka messages in", "Records the broker accepts, per second.",
              (q(f'sum(rate(kafka_server_brokertopicmetrics_count{{name="MessagesInPerSec"}}[{RATE}]))'),), "ops"),
    PanelSpec("Kafka under-replicated partitions", "Should be 0.",
              (q('max(kafka_server_replicamanager_value{name="UnderReplicatedPartitions"})'),), "short", "stat"),
    PanelSpec("Children in the concern table", "Pictures the concern stage holds (its changelog rebuilds them).",
              (q("sum(sgbus_concern_children)"),), "short", "stat"),
    PanelSpec("Worker memory", "Resident memory of each worker.",
              (q('process_resident_memory_bytes{job="sgbus-worker"}', "{{stage}} {{instance}}"),), "bytes"),
    PanelSpec("Redaction held batches", "Ingest batches held because the redactor could not be built.",
              (q(f"sum(rate(sgbus_redaction_unavailable_total[{RATE}]))"),), "ops", data_expected=False),
))

DASHBOARDS = (OVERVIEW, PARTNER, POLICY, PIPELINE)


def _panel(spec: PanelSpec) -> gt.Panel | gs.Panel:
    panel: gt.Panel | gs.Panel = gs.Panel() if spec.kind == "stat" else gt.Panel()
    panel.title(spec.title).description(spec.description).unit(spec.unit).datasource(DATASOURCE).height(8).span(12)
    for i, query in enumerate(spec.queries):
        target = gp.Dataquery().expr(query.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        if query.legend:
            target.legend_format(query.legend)
        panel.with_target(target)
    return panel


def build(spec: DashboardSpec) -> dict[str, object]:
    board = (gd.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
             .refresh("30s").time("now-6h", "now").timezone("browser").editable())
    board.with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    if spec.partner_variable:
        board.with_variable(
            gd.QueryVariable("partner").label("Partner").datasource(DATASOURCE)
            .query("label_values(sgbus_deliveries_total, partner)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".*"))
    for panel in spec.panels:
        board.with_panel(_panel(panel))
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def out_dir() -> Path:
    return deploy_dir() / "grafana"


def render_all() -> dict[str, str]:
    """file name -> JSON text, exactly as committed."""
    return {f"{spec.uid}.json": json.dumps(build(spec), indent=2, sort_keys=True) + "\n" for spec in DASHBOARDS}


def main() -> int:
    directory = out_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (directory / name).write_text(text)
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
