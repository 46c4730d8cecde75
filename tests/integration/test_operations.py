"""Operators' view of a running bus: the stack's Prometheus scrapes every process, every dashboard
query answers, metric labels stay within the partnership's finite sets, and stopping OPA fires
SgbusOpaDown in Alertmanager."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bus.ops import dashboards
from bus.policy.data import load_partnership
from bus.security.pki import client_context
from bus.topics import deliver_topic, topic_specs
from schemas.registry import EVENT_MODELS
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus

PARTNERSHIP = load_partnership(REPO / "policies" / "data")


def _prometheus(bus: Bus) -> str:
    url = bus.stack.status()["prometheus_url"]
    assert url, "the stack's Prometheus is not running"
    return str(url)


def operator(bus: Bus) -> httpx.Client:
    """The operator's login (HTTPS with the partnership CA)."""
    return bus.stack.monitoring_access().client()


def query(bus: Bus, expr: str) -> list[dict[str, Any]]:
    with operator(bus) as client:
        resp = client.get(f"{_prometheus(bus)}/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _da_event(s: Synth, incident_at: datetime) -> dict[str, Any]:
    event = s.domestic_abuse_incident(s.child(), school_urn="900001")
    event["payload"]["incident_at"] = incident_at.isoformat()
    event["occurred_at"] = (incident_at + timedelta(minutes=1)).isoformat()
    event["recorded_at"] = (incident_at + timedelta(minutes=2)).isoformat()
    return event


@pytest.fixture(scope="module")
def traffic(bus: Bus) -> dict[str, Any]:
    """Shares, a denial, a dead letter, one Encompass notification on time and one late; then
    Prometheus has scraped the worker after all of it."""
    s = Synth(seed=1717)
    now = datetime.now(UTC)
    on_time = _da_event(s, now - timedelta(minutes=5))
    late = _da_event(s, now - timedelta(days=10))
    plan = s.child_protection_plan(s.child())
    notified = bus.metric("sgbus_encompass_notifications_total")
    missed = bus.metric("sgbus_encompass_deadline_missed_total")
    dead = bus.metric("sgbus_dlq_total")
    bus.publish([on_time, late, plan])
    bus.publish_raw("police", b"k", b'{"not": "an event"}')
    ids = {on_time["event_id"], late["event_id"]}
    wait_for(lambda: ids <= {json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic("oakfield-primary"))},
             90, what="both notifications at the school")
    wait_for(lambda: bus.metric("sgbus_dlq_total") > dead, 60, what="the dead letter")
    wait_for(lambda: bus.metric("sgbus_audit_chain_length") > 0, 60, what="an audit chain verification")
    # Prometheus has the worker's counts once it reports at least what the worker itself does.
    delivered = bus.metric("sgbus_deliveries_total")
    wait_for(lambda: (r := query(bus, 'sum(sgbus_deliveries_total{job="sgbus-worker"})')) and
             float(r[0]["value"][1]) >= delivered, 60, what="Prometheus to scrape the worker")
    wait_for(lambda: query(bus, 'sgbus_audit_chain_verified{job="sgbus-worker"}'), 60,
             what="Prometheus to scrape the audit chain verification")
    return {"events": [on_time, late, plan], "notified": notified, "missed": missed}


def test_stack_status_names_prometheus_and_alertmanager_and_both_are_ready(bus: Bus) -> None:
    status = bus.stack.status()
    for name in ("prometheus_url", "alertmanager_url"):
        assert status[name] and status[name].startswith("https://127.0.0.1:")
        with operator(bus) as client:
            assert client.get(f"{status[name]}/-/ready").status_code == 200


def test_a_local_user_without_the_operator_login_can_neither_read_nor_silence(bus: Bus) -> None:
    """Else anyone on the host could silence SgbusAuditChainVerificationFailed before tampering."""
    status = bus.stack.status()
    ca = bus.stack.monitoring_access().ca_file
    silence = {"matchers": [{"name": "alertname", "value": ".*", "isRegex": True}], "createdBy": "x",
               "comment": "x", "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z"}
    with httpx.Client(verify=client_context(ca), timeout=10) as anonymous:
        assert anonymous.post(f"{status['alertmanager_url']}/api/v2/silences", json=silence).status_code == 401
        assert anonymous.get(f"{status['prometheus_url']}/api/v1/query", params={"query": "up"}).status_code == 401
        assert anonymous.post(f"{status['prometheus_url']}/-/quit").status_code == 401
    with httpx.Client(verify=client_context(ca), auth=("monitoring-operator", "guess"), timeout=10) as guesser:
        assert guesser.get(f"{status['alertmanager_url']}/api/v2/alerts").status_code == 401
    # Plain HTTP is refused before any handler runs.
    plain = httpx.get(status["prometheus_url"].replace("https://", "http://") + "/api/v1/query",
                      params={"query": "up"}, timeout=5)
    assert plain.status_code == 400 and "HTTPS" in plain.text
    with operator(bus) as client:  # and the operator's own login works, but lifecycle calls do not exist
        assert client.post(f"{status['prometheus_url']}/-/quit").status_code == 403


def test_prometheus_scrapes_opa_kafka_and_the_worker(bus: Bus, traffic: dict[str, Any]) -> None:
    def healthy_jobs() -> set[str] | None:
        with operator(bus) as client:
            resp = client.get(f"{_prometheus(bus)}/api/v1/targets").json()
        targets = [t["labels"] for t in resp["data"]["activeTargets"] if t["health"] == "up"]
        up = {t["job"] for t in targets}
        # The sharing worker and the concern stage are separate processes, each its own target.
        stages = {t.get("stage") for t in targets if t["job"] == "sgbus-worker"}
        wanted = {"opa", "kafka", "sgbus-worker", "prometheus", "alertmanager"}
        return up if wanted <= up and {"all", "concern"} <= stages else None

    wait_for(healthy_jobs, 60, what="every target up")
    worker = query(bus, 'up{job="sgbus-worker"}')
    assert {w["metric"]["stage"]: w["value"][1] for w in worker} == {"all": "1", "concern": "1"}


def test_encompass_notifications_are_counted_on_time_or_late(bus: Bus, traffic: dict[str, Any]) -> None:
    assert bus.metric("sgbus_encompass_notifications_total") - traffic["notified"] == 2
    assert bus.metric("sgbus_encompass_deadline_missed_total") - traffic["missed"] == 1


def test_worker_reports_its_lag_and_the_audit_chain_verified(bus: Bus, traffic: dict[str, Any]) -> None:
    def lag_topics() -> set[str] | None:
        # The worker reads its group's commits in the background (bus/ops/lag.py): the first
        # scrapes after the traffic may still hold a reading from before its first commit.
        topics = {r["metric"]["topic"] for r in query(bus, 'sgbus_consumer_lag{job="sgbus-worker", consumer="all"}')}
        return topics if "sg.audit" in topics and any(t.startswith("sg.ingress.") for t in topics) else None

    topics = wait_for(lag_topics, 60, what="the worker's lag on sg.audit and its ingress topics in Prometheus")
    # It routes what it ingests in the same batch and never reads sg.events back (only sg.replay).
    assert "sg.events" not in topics
    assert bus.metric("sgbus_audit_chain_verified") == 1
    assert bus.metric("sgbus_audit_chain_length") >= 3
    # The worker's first walk is a whole one (README "What the audit stage verifies").
    assert bus.metric("sgbus_audit_chain_last_full_verified_timestamp_seconds") > 0


def _panels() -> list[tuple[str, dashboards.PanelSpec, str]]:
    specs = {(d.uid, p.title): p for d in dashboards.DASHBOARDS for p in d.panels}
    out = []
    for path in sorted(dashboards.out_dir().glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((board["uid"], specs[(board["uid"], panel["title"])], target["expr"]))
    return out


@pytest.mark.parametrize(("uid", "panel", "expr"), _panels(), ids=lambda v: v.title if hasattr(v, "title") else "")
def test_every_dashboard_query_answers_on_the_live_prometheus(bus: Bus, traffic: dict[str, Any], uid: str,
                                                              panel: dashboards.PanelSpec, expr: str) -> None:
    # As Grafana would send it: the rate window and "All" partners.
    live = expr.replace("$__rate_interval", "5m").replace("$partner", ".*")
    if not panel.data_expected:
        query(bus, live)  # must parse and evaluate; may be empty (no webhook, no override here)
        return
    wait_for(lambda: query(bus, live), 60, what=f"data for {uid} / {panel.title}: {live}")


def test_metric_labels_stay_within_the_partnerships_finite_sets(bus: Bus, traffic: dict[str, Any]) -> None:
    with operator(bus) as client:
        series = client.get(f"{_prometheus(bus)}/api/v1/series", params={"match[]": '{__name__=~"sgbus_.+"}'}).json()[
            "data"]
    assert len(series) > 50
    topics = {t.name for t in topic_specs(PARTNERSHIP)}
    stages = {"all", "ingest", "route", "audit", "concern"}
    agreements = {a.id for a in PARTNERSHIP.agreements} | {"none"}
    if PARTNERSHIP.emergency:
        agreements.add(PARTNERSHIP.emergency.id)
    code = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
    allowed: dict[str, Any] = {
        "agency": {p.agency for p in PARTNERSHIP.partners},
        "event_type": set(EVENT_MODELS),
        "partner": {p.id for p in PARTNERSHIP.partners} | {"none"},  # none: the gateway before authentication
        "agreement": agreements,
        "outcome": {"allow", "deny", "delivered", "rejected", "duplicate", "published", "already_sent", "read",
                    "unreadable"},
        "reason": code,
        "result": {"hit", "miss"},  # the decision cache
        "stage": stages,
        "consumer": re.compile(r"^(all|ingest|route|audit|concern|mailbox|delivery:[a-z0-9-]+)$"),
        "rule": {r.id for r in PARTNERSHIP.concern.rules} if PARTNERSHIP.concern else set(),
        "topic": topics,
        "revision": re.compile(r"^sha256:[0-9a-f]{16,64}$"),
        "le": re.compile(r"^(\+Inf|[0-9.e+-]+)$"),
        "channel": re.compile(r"^[a-z0-9-]{1,30}$"),
        # the gateway's route templates (never the path a caller sent) and HTTP statuses
        "route": re.compile(r"^(unmatched|/[a-z0-9/_:.{}-]*)$"), "status": re.compile(r"^[0-9]{3}$"),
        # infrastructure labels Prometheus adds
        "__name__": re.compile(r"^sgbus_[a-z0-9_]+$"), "job": re.compile(r"^sgbus-[a-z]+$"),
        "instance": re.compile(r"^127\.0\.0\.1:[0-9]+$"), "pid": re.compile(r"^[0-9]+$"),
        "partnership": {"local"},
    }
    identifiers = {v for e in traffic["events"] for v in _strings(e["subject"])}
    for s in series:
        for label, value in s.items():
            assert label in allowed, f"unexpected label {label} on {s['__name__']}"
            rule = allowed[label]
            ok = rule.match(value) if isinstance(rule, re.Pattern) else value in rule
            assert ok, f"{s['__name__']}: {label}={value!r} is outside its finite set"
            assert not any(i in value for i in identifiers if len(i) > 3), f"an identifier in {s['__name__']}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)] if value is not None and not isinstance(value, bool) else []


def test_sgbus_status_summarises_processes_lag_and_alerts(bus: Bus, traffic: dict[str, Any]) -> None:
    env = {"SGBUS_HOME": str(bus.settings.home), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "bus", "status", "--json"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode in (0, 1), result.stderr
    status = json.loads(result.stdout)
    assert any(t["job"] == "sgbus-worker" and t["up"] for t in status["targets"])
    assert any(x["consumer"] == "all" for x in status["lag"])
    assert status["opa_up"] == 1 and status["audit_verified"] == 1
    text = subprocess.run([sys.executable, "-m", "bus", "status"], capture_output=True, text=True, env=env,
                          timeout=60, check=False).stdout
    assert "processes:" in text and "alerts firing (" in text and "sgbus-worker (all)" in text
    assert status["alert_rules"] >= 18 and status["alerts_checked"] is True


def test_stopping_opa_fires_sgbus_opa_down_in_alertmanager(bus: Bus, traffic: dict[str, Any]) -> None:
    alertmanager = bus.stack.status()["alertmanager_url"]

    def opa_down() -> list[dict[str, Any]] | None:
        with operator(bus) as client:
            alerts = client.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"}).json()
        return [a for a in alerts if a["labels"]["alertname"] == "SgbusOpaDown"] or None

    assert opa_down() is None
    bus.stack.stop_opa()
    try:
        fired = wait_for(opa_down, 120, interval_s=1.0, what="SgbusOpaDown in Alertmanager")
        assert fired[0]["labels"]["severity"] == "critical"
        assert "sharing has stopped" in fired[0]["annotations"]["summary"]
        assert "fail closed" in fired[0]["annotations"]["runbook"]
    finally:
        bus.stack.start_opa()
        bus.stack.reload_prometheus()
    # The bus carries on once OPA is back (other tests share this worker).
    s = Synth(seed=4242)
    canary = s.child_protection_plan(s.child())
    bus.publish([canary])
    bus.audits_for({canary["event_id"]}, 1, timeout_s=120)
