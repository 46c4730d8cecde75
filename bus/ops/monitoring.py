"""Configuration of the local stack's Prometheus, Alertmanager and Kafka JMX exporter."""

from __future__ import annotations

from pathlib import Path

import yaml

from bus.security.files import write_private
from bus.security.pki import Issued

#: the local stack scrapes and evaluates every 5 s so an alert's `for:` is the only wait
SCRAPE_INTERVAL = "5s"

# Broker metrics operators read: throughput, request latency, under-replication, controller.
JMX_EXPORTER_CONFIG = {
    "lowercaseOutputName": True,
    "lowercaseOutputLabelNames": True,
    "includeObjectNames": [
        "kafka.server:type=BrokerTopicMetrics,name=*",
        "kafka.server:type=ReplicaManager,name=*",
        "kafka.controller:type=KafkaController,name=*",
        "kafka.network:type=RequestMetrics,name=TotalTimeMs,request=*",
        "kafka.server:type=KafkaRequestHandlerPool,name=*",
        "java.lang:type=Memory",
    ],
    "rules": [{"pattern": ".*"}],
}


def deploy_dir() -> Path:
    """The repository's deploy/ directory (rules, dashboards)."""
    return Path(__file__).resolve().parents[2] / "deploy"


def rules_dir() -> Path:
    return deploy_dir() / "prometheus" / "rules"


def prometheus_config(*, targets_dir: Path, alertmanager_port: int, opa_port: int | None,
                      opa_token_file: Path, ca_file: Path, jmx_port: int | None,
                      prometheus_port: int, self_auth: dict[str, object] | None = None,
                      scraper: Issued | None = None) -> dict[str, object]:
    """`self_auth`: scheme, basic_auth and tls_config for reaching Prometheus and Alertmanager
    themselves (both serve HTTPS with an operator login: bus/ops/web_auth.py)."""
    auth = self_auth or {}
    scrape: list[dict[str, object]] = [
        {"job_name": "prometheus", **auth, "static_configs": [{"targets": [f"127.0.0.1:{prometheus_port}"]}]},
        {"job_name": "alertmanager", **auth, "static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]},
        # Every sgbus process serving /metrics registers a file here (bus/ops/targets.py); the
        # file's `job` label (sgbus-worker, sgbus-gateway, ...) replaces this job's name and its
        # `__scheme__` says https when the process serves TLS, read only with the scraper's certificate.
        {"job_name": "sgbus", "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}],
         **({"tls_config": {"ca_file": str(ca_file), "cert_file": str(scraper.cert), "key_file": str(scraper.key)}}
            if scraper else {})},
    ]
    if opa_port is not None:
        scrape.append({
            "job_name": "opa", "scheme": "https", "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials_file": str(opa_token_file)},
            "tls_config": {"ca_file": str(ca_file)},
            "static_configs": [{"targets": [f"127.0.0.1:{opa_port}"]}],
        })
    if jmx_port is not None:
        scrape.append({"job_name": "kafka", "static_configs": [{"targets": [f"127.0.0.1:{jmx_port}"]}]})
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "external_labels": {"partnership": "local"}},
        "rule_files": [str(rules_dir() / "*.yml")],
        "alerting": {"alertmanagers": [{**auth, "static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": scrape,
    }


def alertmanager_config() -> dict[str, object]:
    """Alerts are kept and shown (API, `sgbus status`); a partnership adds its own receivers
    (email, Teams/Slack webhook, paging) under `receivers` — README "Operating sgbus"."""
    return {
        "route": {"receiver": "operators", "group_by": ["alertname", "partner", "stage"],
                  "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h"},
        "receivers": [{"name": "operators"}],
    }


def write_yaml(path: Path, doc: object) -> Path:
    """Atomically, mode 0600 (a web config holds a password hash)."""
    return write_private(path, yaml.safe_dump(doc, sort_keys=False))
