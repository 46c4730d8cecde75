"""Operators' tooling without services: alert rules (promtool), dashboards, scrape config, targets, labels."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bus.metrics import DENY_REASONS, Metrics, deny_category
from bus.ops import alert_tests, dashboards, monitoring, targets, web_auth
from bus.policy.data import load_partnership
from bus.security.pki import Issued
from bus.toolchain.monitoring import ensure_prometheus
from connectors.delivery.metrics import DeliveryMetrics

REPO = Path(__file__).parents[2]
RULES = REPO / "deploy/prometheus/rules/sgbus.yml"
PARTNERSHIP = load_partnership(REPO / "policies/data")


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure_prometheus().promtool


def test_alert_rules_pass_promtool_check(promtool: Path) -> None:
    result = subprocess.run([str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_unit_test_that_passes(promtool: Path) -> None:
    files = [str(f) for f in alert_tests.TEST_FILES]
    result = subprocess.run([str(promtool), "test", "rules", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)
    tested = {case["alertname"] for path in alert_tests.TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]
              for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert tested == set(alert_tests.rules_by_alert(yaml.safe_load(RULES.read_text())))


def test_promtool_tests_expect_the_rules_current_runbook_text() -> None:
    for path in alert_tests.TEST_FILES:
        assert path.read_text() == alert_tests.filled_text(path), (
            "run `python -m bus.ops.alert_tests` after editing the rules' annotations")


def test_every_alert_has_a_severity_summary_and_runbook_and_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text().split("## Operating sgbus", 1)[1]
    for name, rule in alert_tests.rules_by_alert(yaml.safe_load(RULES.read_text())).items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["runbook"]) > 80, name
        assert f"`{name}`" in readme, f"README 'Operating sgbus' does not explain {name}"


def test_alert_rules_group_only_by_bounded_labels() -> None:
    text = RULES.read_text()
    for group in re.findall(r"by \(([^)]*)\)", text):
        for label in (x.strip() for x in group.split(",")):
            assert label in {"instance", "stage", "agreement", "reason", "partner", "channel", "agency"}, label


def test_committed_dashboards_are_what_the_generator_makes() -> None:
    rendered = dashboards.render_all()
    committed = {p.name: p.read_text() for p in dashboards.out_dir().glob("*.json")}
    assert committed == rendered, "run `python -m bus.ops.dashboards` and commit deploy/grafana/"


def test_dashboards_cover_overview_partner_policy_and_pipeline() -> None:
    titles = {json.loads(t)["title"] for t in dashboards.render_all().values()}
    assert titles == {"sgbus - overview", "sgbus - per-partner delivery", "sgbus - policy decisions",
                      "sgbus - pipeline health"}
    for text in dashboards.render_all().values():
        board = json.loads(text)
        assert board["panels"], board["title"]
        for panel in board["panels"]:
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_rendered_prometheus_config_passes_promtool(tmp_path: Path, promtool: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    access = web_auth.MonitoringAccess("monitoring-operator", "pw", ca)
    password = tmp_path / "password"
    password.write_text("pw")
    doc = monitoring.prometheus_config(targets_dir=tmp_path / "targets", alertmanager_port=9093, opa_port=8181,
                                       opa_token_file=token, ca_file=ca, jmx_port=7071, prometheus_port=9090,
                                       self_auth=web_auth.scrape_auth(access, password, ca),
                                       scraper=Issued(tmp_path / "s.key", tmp_path / "s.pem", ca))
    config = monitoring.write_yaml(tmp_path / "prometheus.yml", doc)
    result = subprocess.run([str(promtool), "check", "config", "--syntax-only", str(config)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {c["job_name"] for c in doc["scrape_configs"]}  # type: ignore[index, union-attr]
    assert jobs == {"prometheus", "alertmanager", "sgbus", "opa", "kafka"}
    opa = next(c for c in doc["scrape_configs"] if c["job_name"] == "opa")  # type: ignore[union-attr, index]
    # The token and the operator's password are read from files, never written into the config.
    assert opa["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert "pw" not in config.read_text().replace(str(password), "")
    sgbus = next(c for c in doc["scrape_configs"] if c["job_name"] == "sgbus")  # type: ignore[union-attr, index]
    # Processes' /metrics are read only with the scraper's client certificate.
    assert sgbus["tls_config"]["cert_file"] == str(tmp_path / "s.pem")
    alerting = doc["alerting"]["alertmanagers"][0]  # type: ignore[index]
    assert alerting["scheme"] == "https" and alerting["basic_auth"]["password_file"] == str(password)


def test_web_config_holds_a_bcrypt_hash_of_the_operator_password_not_the_password(tmp_path: Path) -> None:
    import bcrypt

    access = web_auth.MonitoringAccess("monitoring-operator", "correct horse battery staple")
    doc = web_auth.web_config(Issued(tmp_path / "k", tmp_path / "c", tmp_path / "ca"), access)
    hashed = doc["basic_auth_users"]["monitoring-operator"]  # type: ignore[index]
    assert "correct horse" not in yaml.safe_dump(doc)
    assert bcrypt.checkpw(b"correct horse battery staple", hashed.encode())
    assert doc["tls_server_config"]["min_version"] == "TLS12"  # type: ignore[index]


def test_a_registered_target_names_its_job_and_goes_only_when_its_process_was_asked_to_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "_mine", [])
    monkeypatch.setattr(targets, "_stopping", False)
    path = targets.register(tmp_path, "sgbus-worker", 12345, {"stage": "route", "job": "spoofed"}, scheme="https")
    entry = json.loads(path.read_text())
    assert entry[0]["targets"] == ["127.0.0.1:12345"]
    # The process's labels cannot change its job or scheme.
    assert entry[0]["labels"] == {"stage": "route", "job": "sgbus-worker", "__scheme__": "https"}
    assert path.stat().st_mode & 0o077 == 0
    targets.leave()  # a crash: the entry stays, so Prometheus sees the target down
    assert path.exists()
    targets.stopping()
    targets.leave()
    assert not path.exists()
    dead = targets.targets_dir(tmp_path) / "sgbus-gateway-999999999.json"
    dead.write_text("[]")
    assert targets.prune(tmp_path) == [dead]
    with pytest.raises(ValueError, match="unknown job"):
        targets.register(tmp_path, "anything", 1)


def test_deny_reasons_fall_into_three_bounded_categories() -> None:
    assert deny_category(["recipient is not a partner of this partnership"]) == "not_a_partner"
    assert deny_category(["no agreement covers x from police/NSP to y"]) == "no_agreement"
    assert deny_category(["DSA-OE-001: the child does not attend oakfield-primary"]) == "conditions_not_met"
    assert set(DENY_REASONS) == {"not_a_partner", "no_agreement", "conditions_not_met"}


def test_delivery_metrics_label_partner_and_channel_only() -> None:
    m = DeliveryMetrics("oakfield-primary", "webhook", CollectorRegistry())
    m.outcome("delivered")
    m.failure("server_error")
    assert m.registry.get_sample_value("sgbus_partner_deliveries_total", {
        "partner": "oakfield-primary", "channel": "webhook", "outcome": "delivered"}) == 1
    assert m.registry.get_sample_value("sgbus_partner_delivery_failures_total", {
        "partner": "oakfield-primary", "channel": "webhook", "reason": "server_error"}) == 1


def test_a_notification_delivered_before_the_next_school_day_is_on_time_and_after_it_late() -> None:
    m = Metrics()
    school = next(p for p in PARTNERSHIP.partners if p.agency == "school")
    incident = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)  # Thursday evening: due Friday 08:30
    common = {"event_type": "police.domestic_abuse_incident.v1", "recipient": school.id, "recipient_agency": "school",
              "occurred_at": incident, "published_at": incident, "calendar": PARTNERSHIP.school_calendar}
    m.delivered(**common, now=datetime(2026, 11, 27, 7, 0, tzinfo=UTC))
    assert m.registry.get_sample_value("sgbus_encompass_notifications_total") == 1
    assert m.registry.get_sample_value("sgbus_encompass_deadline_missed_total") == 0
    m.delivered(**common, now=datetime(2026, 11, 27, 9, 0, tzinfo=UTC))
    assert m.registry.get_sample_value("sgbus_encompass_deadline_missed_total") == 1
    # The same event to social care is not an Encompass notification.
    m.delivered(**{**common, "recipient": "northshire-csc", "recipient_agency": "social_care"},
                now=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    assert m.registry.get_sample_value("sgbus_encompass_notifications_total") == 2
    assert m.registry.get_sample_value("sgbus_e2e_latency_seconds_count",
                                       {"event_type": "police.domestic_abuse_incident.v1"}) == 3


def test_no_metric_takes_a_label_that_could_carry_an_identifier_or_text() -> None:
    allowed = {"agency", "event_type", "reason", "outcome", "agreement", "partner", "revision", "le", "rule",
               "implementation", "major", "minor", "patchlevel", "version"}  # python_info
    for family in Metrics().registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (family.name, sample.labels)


def test_an_inbound_connector_reports_its_running_totals() -> None:
    from connectors.metrics import ConnectorCollector
    from connectors.run import RunStats

    stats = RunStats()
    registry = CollectorRegistry()
    registry.register(ConnectorCollector("cin-census", "N01", stats))
    stats.files, stats.published, stats.rejected = 2, 6, 1
    labels = {"connector": "cin-census", "org_id": "N01"}
    assert registry.get_sample_value("sgbus_connector_files_total", {**labels, "outcome": "read"}) == 2
    assert registry.get_sample_value("sgbus_connector_records_total", {**labels, "outcome": "published"}) == 6
    assert registry.get_sample_value("sgbus_connector_records_total", {**labels, "outcome": "rejected"}) == 1


def test_a_restarted_stage_replaces_its_crashed_predecessor_s_target_but_not_another_stage_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Else SgbusWorkerDown fires for ever after a crash, even once the stage is back."""
    monkeypatch.setattr(targets, "_mine", [])
    directory = targets.targets_dir(tmp_path)
    directory.mkdir(parents=True)

    def dead(name: str, stage: str) -> Path:
        path = directory / f"sgbus-worker-{name}.json"
        path.write_text(json.dumps([{"targets": ["127.0.0.1:1"],
                                     "labels": {"stage": stage, "job": "sgbus-worker", "__scheme__": "https"}}]))
        return path

    crashed_concern, crashed_route = dead("999999991", "concern"), dead("999999992", "route")
    alive_concern = directory / f"sgbus-worker-{os.getppid()}.json"  # a running process: never touched
    alive_concern.write_text(crashed_concern.read_text())
    mine = targets.register(tmp_path, "sgbus-worker", 2345, {"stage": "concern"}, scheme="https")
    assert not crashed_concern.exists()
    assert crashed_route.exists() and alive_concern.exists() and mine.exists()


def test_every_gateway_route_a_rule_or_dashboard_names_is_one_the_gateway_labels() -> None:
    """Found in review: SgbusMailboxErrors matched route="mailbox", which the gateway never
    emits (its label is the path, "/v1/mailbox"): the alert could not fire."""
    import re

    repo = Path(__file__).parents[2]
    paths = re.findall(r'add_(?:get|post)\("([^"]+)"', (repo / "bus" / "gateway" / "server.py").read_text())
    assert "/v1/mailbox" in paths
    texts = [(repo / "deploy" / "prometheus" / "rules" / "sgbus.yml").read_text(),
             *(p.read_text() for p in (repo / "deploy" / "grafana").glob("*.json"))]
    named = [(op, value) for text in texts
             for op, value in re.findall(r'route\\*"?\s*(=~|=)\s*\\*"([^"\\]+)', text)]
    assert named
    for op, value in named:
        if op == "=":
            assert value in paths, value
        else:
            assert any(re.fullmatch(value, p) for p in paths), value
