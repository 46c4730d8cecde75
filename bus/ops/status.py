"""`sgbus status`: what an operator without a browser needs, read from Prometheus's and Alertmanager's HTTP APIs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx

from bus.ops.web_auth import MonitoringAccess

QUERIES = {
    "targets": 'up{job=~"sgbus-.*|opa|kafka"}',
    "lag": "sum by (consumer, topic) (sgbus_consumer_lag)",
    "ingested_per_s": "sum(rate(sgbus_events_ingested_total[1m]))",
    "delivered_per_s": "sum(rate(sgbus_deliveries_total[1m]))",
    "decisions_per_s": "sum by (outcome) (rate(sgbus_policy_decisions_total[1m]))",
    "dead_letters_1h": "sum by (reason) (increase(sgbus_dlq_total[1h]))",
    "rejected_1h": "sum by (reason) (increase(sgbus_events_rejected_total[1h]))",
    "opa_up": "min(sgbus_opa_up)",
    "audit_verified": 'min(sgbus_audit_chain_verified{stage=~"all|audit"})',
    "audit_length": 'max(sgbus_audit_chain_length{stage=~"all|audit"})',
    "delivered_total": 'sum(sgbus_deliveries_total{job="sgbus-worker"})',
}


class StatusUnavailable(Exception):
    """Prometheus (or Alertmanager) could not be asked."""


@dataclass
class Status:
    targets: list[dict[str, Any]] = field(default_factory=list)
    lag: list[dict[str, Any]] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    decisions_per_s: dict[str, float] = field(default_factory=dict)
    dead_letters_1h: dict[str, float] = field(default_factory=dict)
    rejected_1h: dict[str, float] = field(default_factory=dict)
    opa_up: float | None = None
    audit_verified: float | None = None
    audit_length: float | None = None
    #: deliveries the workers have counted since they started
    delivered_total: int = 0
    #: alerting rules Prometheus has loaded (0: nothing can alert)
    alert_rules: int = 0
    #: False when no Alertmanager was asked: firing alerts are then unknown
    alerts_checked: bool = False
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Why this is not healthy; empty when it is."""
        out = [f"{t['job']} {t['instance']} is down" for t in self.targets if not t["up"]]
        if not any(t["job"] == "sgbus-worker" and t["up"] for t in self.targets):
            out.append("no worker is running (nothing is being shared)")
        if not self.alerts_checked:
            out.append("alerts not checked (no Alertmanager)")
        if self.alert_rules == 0:
            out.append("Prometheus has no alert rules loaded")
        out += [f"{a['name']} is firing" for a in self.alerts if a["severity"] == "critical"]
        return out

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "problems": self.problems, "alert_rules": self.alert_rules,
                "alerts_checked": self.alerts_checked, "targets": self.targets, "lag": self.lag, "rates": self.rates,
                "decisions_per_s": self.decisions_per_s, "dead_letters_1h": self.dead_letters_1h,
                "rejected_1h": self.rejected_1h, "opa_up": self.opa_up, "audit_verified": self.audit_verified,
                "audit_length": self.audit_length, "delivered_total": self.delivered_total,
                "alerts": self.alerts}


def _query(client: httpx.Client, prometheus: str, expr: str) -> list[dict[str, Any]]:
    try:
        resp = client.get(f"{prometheus}/api/v1/query", params={"query": expr})
        if resp.status_code == 401:
            raise StatusUnavailable(f"Prometheus at {prometheus} refused the operator login (401)")
        resp.raise_for_status()
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise StatusUnavailable(f"Prometheus at {prometheus} did not answer ({type(exc).__name__})") from exc
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def _scalar(samples: list[dict[str, Any]]) -> float | None:
    """The first sample's value; None when there is none or it is NaN (e.g. not yet verified)."""
    if not samples:
        return None
    value = _value(samples[0])
    return None if math.isnan(value) else value


def _by(samples: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): round(_value(s), 3) for s in samples}


def collect(prometheus: str, alertmanager: str | None, access: MonitoringAccess | None = None,
            timeout_s: float = 5.0) -> Status:
    """Ask Prometheus (and Alertmanager) as the operator `access` (HTTPS with a login), or anonymously."""
    status = Status()
    with (access.client(timeout_s) if access else httpx.Client(timeout=timeout_s)) as client:
        r = {name: _query(client, prometheus, expr) for name, expr in QUERIES.items()}
        status.targets = sorted(({"job": s["metric"].get("job", ""), "stage": s["metric"].get("stage"),
                                  "partner": s["metric"].get("partner"), "instance": s["metric"].get("instance", ""),
                                  "up": _value(s) == 1} for s in r["targets"]),
                                key=lambda t: (t["job"], t["stage"] or "", t["instance"]))
        status.lag = sorted(({"consumer": s["metric"].get("consumer", ""), "topic": s["metric"].get("topic", ""),
                              "lag": int(_value(s))} for s in r["lag"]), key=lambda x: (x["consumer"], x["topic"]))
        status.rates = {"ingested_per_s": round(_scalar(r["ingested_per_s"]) or 0.0, 3),
                        "delivered_per_s": round(_scalar(r["delivered_per_s"]) or 0.0, 3)}
        status.delivered_total = int(_scalar(r["delivered_total"]) or 0)
        status.decisions_per_s = _by(r["decisions_per_s"], "outcome")
        status.dead_letters_1h = {k: v for k, v in _by(r["dead_letters_1h"], "reason").items() if v > 0}
        status.rejected_1h = {k: v for k, v in _by(r["rejected_1h"], "reason").items() if v > 0}
        status.opa_up = _scalar(r["opa_up"])
        status.audit_verified = _scalar(r["audit_verified"])
        status.audit_length = _scalar(r["audit_length"])
        try:
            rules = client.get(f"{prometheus}/api/v1/rules", params={"type": "alert"}).json()["data"]["groups"]
            status.alert_rules = sum(len(g["rules"]) for g in rules)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise StatusUnavailable(
                f"Prometheus at {prometheus} did not list its rules ({type(exc).__name__})") from exc
        if alertmanager:
            status.alerts_checked = True
            try:
                resp = client.get(f"{alertmanager}/api/v2/alerts", params={"active": "true", "silenced": "false"})
                resp.raise_for_status()
                alerts = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise StatusUnavailable(
                    f"Alertmanager at {alertmanager} did not answer ({type(exc).__name__})") from exc
            status.alerts = sorted(({"name": a["labels"].get("alertname", ""),
                                     "severity": a["labels"].get("severity", ""),
                                     "labels": {k: v for k, v in a["labels"].items()
                                                if k not in ("alertname", "severity", "partnership")},
                                     "summary": a.get("annotations", {}).get("summary", ""),
                                     "since": a.get("startsAt", "")} for a in alerts),
                                   key=lambda a: (a["severity"] != "critical", a["name"]))
    return status


def render(status: Status) -> str:
    lines = [f"sgbus: {'HEALTHY' if status.healthy else 'ATTENTION NEEDED'}"]
    lines += [f"  - {p}" for p in status.problems]
    lines += ["", "processes:"]
    for t in status.targets:
        what = t["job"] + (f" ({t['stage']})" if t["stage"] else "") + (f" [{t['partner']}]" if t["partner"] else "")
        lines.append(f"  {'up  ' if t['up'] else 'DOWN'}  {what:<40} {t['instance']}")
    if not status.targets:
        lines.append("  (none registered)")
    opa = {None: "unknown", 1.0: "reachable"}.get(status.opa_up, "UNREACHABLE - sharing stopped")
    audit = {None: "not yet verified", 1.0: "verified"}.get(status.audit_verified, "VERIFICATION FAILED")
    verified = status.audit_verified is not None and status.audit_length
    length = f", {int(status.audit_length or 0)} records" if verified else ""
    lines += ["", f"OPA: {opa}    audit chain: {audit}{length}",
              f"rates (1m): ingested {status.rates.get('ingested_per_s', 0):.2f}/s, "
              f"delivered {status.rates.get('delivered_per_s', 0):.2f}/s ({status.delivered_total} since start), "
              "decisions "
              + (", ".join(f"{k} {v:.2f}/s" for k, v in sorted(status.decisions_per_s.items())) or "none"),
              "", "lag (messages not yet committed):"]
    lag = [f"  {x['consumer']:<22} {x['topic']:<36} {x['lag']}" for x in status.lag]
    lines += lag or ["  (no consumer has committed)"]
    lines += ["", "last hour, by reason:"]
    errors = [f"  dead letters  {k}: {v:.0f}" for k, v in sorted(status.dead_letters_1h.items())]
    errors += [f"  rejected      {k}: {v:.0f}" for k, v in sorted(status.rejected_1h.items())]
    lines += errors or ["  no dead letters, no rejections"]
    lines += ["", f"alerts firing ({status.alert_rules} alert rules loaded):"]
    for a in status.alerts:
        where = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("job", "instance", "pid"))
        lines.append(f"  [{a['severity']}] {a['name']}: {a['summary']}" + (f" ({where})" if where else ""))
    if not status.alerts:
        lines.append("  none" if status.alerts_checked else "  unknown: no Alertmanager was asked")
    return "\n".join(lines)
