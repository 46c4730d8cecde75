"""The Helm chart: `helm lint --strict`, `helm template` with the default values and with every
option on, each core object valid for Kubernetes (kubernetes-validate, strict, offline), and the
properties a platform team relies on (no secret values, non-root, deny-by-default network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.deploy.check import CHART, K8S_VERSION, helm, template, validate_core
from bus.toolchain.helm import ensure_helm

REPO = Path(__file__).resolve().parents[2]
FULL = REPO / "tests" / "data" / "helm-values-full.yaml"
STAGES = {"ingest", "route", "audit", "concern"}


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return ensure_helm()


@pytest.fixture(scope="module")
def default_docs(helm_bin: Path) -> list[dict[str, Any]]:
    return template(helm_bin, REPO / CHART, [])


@pytest.fixture(scope="module")
def full_docs(helm_bin: Path) -> list[dict[str, Any]]:
    return template(helm_bin, REPO / CHART, [FULL])


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_chart_lints_strictly(helm_bin: Path) -> None:
    out = helm(helm_bin, "lint", "--strict", str(REPO / CHART), "--values", str(FULL), "--kube-version", K8S_VERSION)
    assert "0 chart(s) failed" in out


def test_every_rendered_core_object_is_valid_kubernetes(default_docs: list[dict[str, Any]],
                                                        full_docs: list[dict[str, Any]]) -> None:
    assert validate_core(default_docs) == []
    assert validate_core(full_docs) == []


def test_the_validation_would_catch_a_misspelt_field(default_docs: list[dict[str, Any]]) -> None:
    bad = next(d for d in default_docs if d["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert validate_core([bad])


def test_one_deployment_per_stage_each_as_its_own_kafka_user(default_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(default_docs, "Deployment")
    for stage in STAGES:
        d = deployments[f"sgbus-{stage}"]
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["worker", "--stage", stage]
        env = {e["name"]: e for e in c["env"]}
        assert env["SGBUS_KAFKA_USERNAME"]["value"] == f"sgbus-{stage}"
        assert env["SGBUS_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"sgbus-{stage}"
        assert {"livenessProbe", "readinessProbe", "resources"} <= set(c)
    assert deployments["sgbus-audit"]["spec"]["replicas"] == 1  # one writer of the one hash chain


def test_no_secret_value_is_in_the_chart(full_docs: list[dict[str, Any]]) -> None:
    assert not by_kind(full_docs, "Secret")
    secretish = ("PASSWORD", "TOKEN", "KEY_JSON", "KEYRING_JSON", "DSN", "SECRET")
    for d in full_docs:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if any(s in e["name"] for s in secretish):
                    assert "valueFrom" in e and "value" not in e, (d["metadata"]["name"], e["name"])


def test_every_pod_runs_non_root_read_only_without_privileges(full_docs: list[dict[str, Any]]) -> None:
    for d in by_kind(full_docs, "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_network_is_denied_by_default_and_opened_per_flow(full_docs: list[dict[str, Any]]) -> None:
    policies = by_kind(full_docs, "NetworkPolicy")
    deny = policies["sgbus-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    opa = policies["sgbus-opa-ingress"]["spec"]["ingress"][0]
    assert {"podSelector": {"matchLabels": {"sgbus.io/opa-client": "true"}}} in opa["from"]
    gateway = policies["sgbus-gateway-ingress"]["spec"]["ingress"][0]
    assert gateway["from"] == yaml.safe_load(FULL.read_text())["networkPolicy"]["gatewayFrom"]


def test_disruption_budgets_only_where_a_replica_can_go(default_docs: list[dict[str, Any]]) -> None:
    pdbs = by_kind(default_docs, "PodDisruptionBudget")
    assert set(pdbs) == {"sgbus-ingest", "sgbus-route", "sgbus-opa"}


def test_one_gateway_whose_revocations_reach_it_while_it_runs(full_docs: list[dict[str, Any]]) -> None:
    gateway = by_kind(full_docs, "Deployment")["sgbus-gateway"]["spec"]
    # Its receipts and limits are its own: never two side by side, not even during an upgrade.
    assert gateway["replicas"] == 1 and gateway["strategy"] == {"type": "Recreate"}
    pod = gateway["template"]["spec"]
    (container,) = pod["containers"]
    # Kubernetes never updates a Secret mounted with subPath: a revoked certificate would keep
    # working until the pod restarted.
    certs = next(m for m in container["volumeMounts"] if m["name"] == "partner-certs")
    assert "subPath" not in certs
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SGBUS_GATEWAY_PARTNER_CERTS"] == certs["mountPath"] + "/partner-certs.json"
    receipts = next(m for m in container["volumeMounts"] if m["name"] == "receipts")
    # The store is a directory the gateway makes inside the claim (it cannot chmod the claim's root).
    assert env["SGBUS_GATEWAY_RECEIPTS_DIR"].startswith(receipts["mountPath"] + "/")
    assert {"name": "receipts", "persistentVolumeClaim": {"claimName": "sgbus-gateway-receipts"}} in pod["volumes"]


def test_rules_and_dashboards_are_the_operators_own(default_docs: list[dict[str, Any]]) -> None:
    rule = by_kind(default_docs, "PrometheusRule")["sgbus"]
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules" / "sgbus.yml").read_text())
    assert rule["spec"] == shipped
    boards = {d["metadata"]["name"]: d for d in by_kind(default_docs, "ConfigMap").values()
              if d["metadata"]["labels"].get("grafana_dashboard") == "1"}
    for board in (REPO / "deploy" / "grafana").glob("*.json"):
        cm = boards[f"sgbus-dashboard-{board.stem}"]
        assert cm["data"][board.name] == board.read_text().rstrip("\n")
    monitor = by_kind(default_docs, "ServiceMonitor")["sgbus"]
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"


def test_connectors_read_as_their_partners_delivery_user(full_docs: list[dict[str, Any]]) -> None:
    d = by_kind(full_docs, "Deployment")["sgbus-deliver-northshire-csc-webhook"]
    c = d["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert c["args"][:3] == ["deliver", "webhook", "northshire-csc"]
    assert env["SGBUS_KAFKA_USERNAME"]["value"] == "delivery.northshire-csc"
    assert env["SGBUS_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "northshire-csc-webhook"


def test_keys_only_where_their_stage_uses_them(full_docs: list[dict[str, Any]]) -> None:
    """The audit pod never holds the pseudonymisation keys beside the audit signing key; only
    the concern pod holds the concern key; connectors hold no OPA token."""
    deployments = by_kind(full_docs, "Deployment")

    def env(name: str) -> set[str]:
        return {e["name"] for e in deployments[name]["spec"]["template"]["spec"]["containers"][0].get("env", [])}

    assert "SGBUS_KEYRING_JSON" not in env("sgbus-audit") and "SGBUS_AUDIT_SIGNING_KEY_JSON" in env("sgbus-audit")
    assert "SGBUS_AUDIT_PUBLIC_KEYS" in env("sgbus-audit")
    audit_env = {e["name"]: e.get("value") for e in
                 deployments["sgbus-audit"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert audit_env["SGBUS_AUDIT_ANCHOR"] == "published"  # a store cut back while the stage was down is refused
    for stage in ("ingest", "route", "concern"):
        names = env(f"sgbus-{stage}")
        assert "SGBUS_KEYRING_JSON" in names and "SGBUS_AUDIT_SIGNING_KEY_JSON" not in names
    assert {n for n in deployments if "SGBUS_CONCERN_SIGNING_KEY" in env(n)} == {"sgbus-concern"}
    assert "SGBUS_OPA_TOKEN" not in env("sgbus-deliver-northshire-csc-webhook")
    assert "SGBUS_METRICS_HOST" in env("sgbus-route")  # probes and scrapes reach it on the pod's address


def test_only_the_stages_that_use_the_audit_store_reach_it_each_with_its_own_login(
        full_docs: list[dict[str, Any]]) -> None:
    """The route and concern pods have no audit store login and no way to its address; the
    others each have their own (bus/audit/roles.py), so none holds a login that can rewrite the chain."""
    deployments = by_kind(full_docs, "Deployment")
    logins = {}
    for name, d in deployments.items():
        pod = d["spec"]["template"]
        env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
        reaches = pod["metadata"]["labels"].get("sgbus.io/audit-store-client") == "true"
        assert ("SGBUS_AUDIT_DSN" in env) == reaches, name
        if reaches:
            logins[name] = env["SGBUS_AUDIT_DSN"]["valueFrom"]["secretKeyRef"]["name"]
    assert logins == {"sgbus-audit": "sgbus-audit-dsn-audit", "sgbus-ingest": "sgbus-audit-dsn-ingest",
                      "sgbus-gateway": "sgbus-audit-dsn-gateway"}


def test_an_upgrade_with_one_audit_store_secret_for_all_is_refused_with_the_way_out(
        helm_bin: Path, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text("secrets:\n  auditDsn: sgbus-audit-dsn\n")
    with pytest.raises(RuntimeError) as refused:
        template(helm_bin, REPO / CHART, [legacy])
    assert "one secret per component" in str(refused.value) and "Audit store roles" in str(refused.value)


def test_egress_is_narrowed_to_each_service(full_docs: list[dict[str, Any]]) -> None:
    policies = by_kind(full_docs, "NetworkPolicy")
    dns = policies["sgbus-dns-egress"]["spec"]["egress"][0]["to"][0]
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    db = policies["sgbus-audit-store-egress"]["spec"]["egress"][0]
    assert db["to"][0]["ipBlock"]["cidr"] and db["ports"] == [{"port": 5432, "protocol": "TCP"}]
    out = policies["sgbus-delivery-egress"]["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert "10.0.0.0/8" in out["except"] and "192.168.0.0/16" in out["except"]
    for p in policies.values():
        for rule in p["spec"].get("egress", []):
            assert rule.get("to"), p["metadata"]["name"]  # no rule open to every destination


def test_opa_runs_only_the_signed_bundle(default_docs: list[dict[str, Any]]) -> None:
    args = by_kind(default_docs, "Deployment")["sgbus-opa"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--signing-alg=ES256" in args and "--authentication=token" in args and "--authorization=basic" in args
    assert [a for a in args if a.endswith((".rego", ".tar.gz"))] == ["/etc/opa/bundle/bundle.tar.gz"]


def test_every_job_the_alert_rules_watch_is_one_the_chart_scrapes_under_that_name(
        full_docs: list[dict[str, Any]]) -> None:
    """Found in review: the ServiceMonitor left the job named after its Service (sgbus-metrics)
    and nothing scraped OPA or Kafka, so SgbusNoWorker always fired and the job-based alerts
    never could."""
    import re

    rules = (REPO / "deploy" / "prometheus" / "rules" / "sgbus.yml").read_text()
    wanted = set(re.findall(r'job="([^"]+)"', rules))
    assert {"sgbus-worker", "opa", "kafka"} <= wanted
    # With every optional part on (delivery connectors are there only when configured).
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in full_docs if d["kind"] == "Deployment"]
    scraped = {labels["sgbus.io/job"] for labels in pods if labels.get("sgbus.io/metrics") == "true"}
    monitors = [d for d in full_docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    for monitor in monitors:
        for endpoint in monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", []):
            scraped |= {r["replacement"] for r in endpoint.get("relabelings", [])
                        if r.get("targetLabel") == "job" and "replacement" in r}
    (service_monitor,) = [m for m in monitors if m["kind"] == "ServiceMonitor"]
    relabels = service_monitor["spec"]["endpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_sgbus_io_job"], "targetLabel": "job"} in relabels
    assert service_monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"] == "sgbus-metrics"
    assert wanted <= scraped, wanted - scraped


def test_monitors_and_rules_carry_the_labels_the_operator_selects_by(helm_bin: Path, tmp_path: Path) -> None:
    values = tmp_path / "labels.yaml"
    values.write_text("monitoring:\n  labels: {release: kube-prometheus-stack}\n")
    docs = template(helm_bin, REPO / CHART, [values])
    selected = [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
    assert len(selected) == 4
    assert all(d["metadata"]["labels"]["release"] == "kube-prometheus-stack" for d in selected)


def test_a_kafka_outage_takes_the_gateway_out_of_service_without_restarting_it(
        default_docs: list[dict[str, Any]]) -> None:
    """Found in review: liveness called /healthz, which waits up to 2 s on the brokers, with the
    default 1 s timeout: in a Kafka outage the gateway was restarted into a crash loop."""
    gateway = by_kind(default_docs, "Deployment")["sgbus-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert "tcpSocket" in gateway["livenessProbe"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["timeoutSeconds"] >= 3


def test_a_file_channel_leaves_its_files_on_a_claim_and_has_no_internet_egress(
        full_docs: list[dict[str, Any]], helm_bin: Path, tmp_path: Path) -> None:
    """Found in review: the file connector wrote to the pod's emptyDir and committed the offsets:
    Encompass notices counted as delivered were lost with the pod, never collected."""
    deployment = by_kind(full_docs, "Deployment")["sgbus-deliver-oakfield-primary-file"]["spec"]["template"]
    volumes = {v["name"]: v for v in deployment["spec"]["volumes"]}
    assert volumes["outbox"]["persistentVolumeClaim"]["claimName"] == "oakfield-primary-outbox"
    mounts = {m["name"]: m["mountPath"] for m in deployment["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["outbox"] == "/var/lib/sgbus/outbox"
    assert "sgbus.io/egress-partner" not in deployment["metadata"]["labels"]
    no_claim = tmp_path / "no-claim.yaml"
    no_claim.write_text("connectors:\n  - {partner: oakfield-primary, channel: file, args: [--dir, /x]}\n")
    with pytest.raises(RuntimeError, match="needs outboxClaim"):
        template(helm_bin, REPO / CHART, [no_claim])
