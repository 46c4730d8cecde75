"""Outbound delivery against real local HTTP servers and a real drop directory."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bus.security.principals import delivery_name
from bus.topics import DLQ
from connectors.delivery.base import run_delivery
from connectors.delivery.filedrop import FileDropSink
from connectors.delivery.metrics import DeliveryMetrics
from connectors.delivery.webhook import WebhookSink
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus

SECRET = b"test-secret-generated-per-run"


@dataclass
class Endpoint:
    """A real HTTP server on 127.0.0.1 whose answer per request the test decides."""

    answer: Callable[[str, int], int] = lambda event_id, attempt: 200
    delay_s: Callable[[str], float] = lambda event_id: 0.0
    accepted: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    url: str = ""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            event_id = self.headers["X-Sgbus-Event-Id"]
            ep.attempts[event_id] = ep.attempts.get(event_id, 0) + 1
            time.sleep(ep.delay_s(event_id))
            status = ep.answer(event_id, ep.attempts[event_id])
            if status < 300:
                ep.accepted.append((event_id, dict(self.headers), body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ep.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ep
    server.shutdown()


def _publish_for_one_child(bus: Bus, seed: int, count: int) -> list[str]:
    s = Synth(seed=seed)
    child = s.child(min_age=5)
    events = [s.domestic_abuse_incident(child, school_urn="900001") for _ in range(count)]
    bus.publish(events)
    ids = [e["event_id"] for e in events]
    bus.audits_for(set(ids), 4 * count)
    return ids


def test_webhook_retries_5xx_with_backoff_then_delivers_each_event_once_signed_and_in_order(
    bus: Bus, endpoint: Endpoint, tmp_path: Path,
) -> None:
    ids = _publish_for_one_child(bus, seed=71, count=3)
    endpoint.answer = lambda event_id, attempt: 503 if event_id == ids[0] and attempt <= 2 else 200
    metrics = DeliveryMetrics("oakfield-primary", "webhook-t1", CollectorRegistry())
    sink = WebhookSink(endpoint.url, SECRET, base_backoff_s=0.05, max_backoff_s=0.2, name="webhook-t1",
                       on_retry=metrics.failure)
    stats = run_delivery(access=bus.access(delivery_name("oakfield-primary")),
                         partner="oakfield-primary", sink=sink, state_dir=tmp_path,
                         idle_timeout_s=3, metrics=metrics)
    labels = {"partner": "oakfield-primary", "channel": "webhook-t1"}
    assert metrics.registry.get_sample_value("sgbus_partner_delivery_failures_total",
                                             {**labels, "reason": "server_error"}) == 2
    assert metrics.registry.get_sample_value("sgbus_partner_deliveries_total",
                                             {**labels, "outcome": "delivered"}) == stats.delivered
    ours = [(eid, headers, body) for eid, headers, body in endpoint.accepted if eid in ids]
    assert [eid for eid, _, _ in ours] == ids  # once each, in the order published for this child
    assert endpoint.attempts[ids[0]] == 3
    for eid, headers, body in ours:
        expected = "sha256=" + hmac.new(SECRET, headers["X-Sgbus-Timestamp"].encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Sgbus-Signature"], expected)
        assert abs(int(headers["X-Sgbus-Timestamp"]) - time.time()) < 120
        assert json.loads(body)["event_id"] == eid
    assert stats.dead_lettered == 0
    again = run_delivery(access=bus.access(delivery_name("oakfield-primary")),
                 partner="oakfield-primary", sink=sink, state_dir=tmp_path,
                         idle_timeout_s=2)
    assert again.delivered == 0  # committed: a restart delivers nothing twice


def test_webhook_4xx_goes_to_the_dlq_with_status_and_delivery_continues(
    bus: Bus, endpoint: Endpoint, tmp_path: Path,
) -> None:
    ids = _publish_for_one_child(bus, seed=72, count=2)
    endpoint.answer = lambda event_id, attempt: 422 if event_id == ids[0] else 200
    sink = WebhookSink(endpoint.url, SECRET, base_backoff_s=0.05, name="webhook-t2")
    metrics = DeliveryMetrics("oakfield-primary", "webhook-t2", CollectorRegistry())
    run_delivery(access=bus.access(delivery_name("oakfield-primary")),
                 partner="oakfield-primary", sink=sink, state_dir=tmp_path, idle_timeout_s=3, metrics=metrics)
    assert metrics.registry.get_sample_value("sgbus_partner_deliveries_total", {
        "partner": "oakfield-primary", "channel": "webhook-t2", "outcome": "rejected"}) == 1
    assert ids[1] in [eid for eid, _, _ in endpoint.accepted]
    assert endpoint.attempts[ids[0]] == 1  # 4xx is final: not retried
    dead = wait_for(lambda: [r for r in bus.records(DLQ) if r.get("event_id") == ids[0]], 30, what="dead letter")
    assert dead[0]["status"] == 422 and dead[0]["recipient"] == "oakfield-primary"


def test_file_drop_writes_whole_json_lines_files_atomically(bus: Bus, tmp_path: Path) -> None:
    ids = _publish_for_one_child(bus, seed=73, count=3)
    drop = tmp_path / "drop"
    sink = FileDropSink(drop, "northshire-csc", name="filedrop-t3")
    run_delivery(access=bus.access(delivery_name("northshire-csc")),
                 partner="northshire-csc", sink=sink, state_dir=tmp_path, idle_timeout_s=3)
    assert not list(drop.glob(".*.partial"))
    lines = [json.loads(line) for f in sorted(drop.glob("*.jsonl")) for line in f.read_text().splitlines()]
    ours = [r["event_id"] for r in lines if r["event_id"] in ids]
    assert sorted(ours) == sorted(ids)
    assert all(r["recipient"] == "northshire-csc" for r in lines)


def test_a_slow_failing_partner_does_not_hold_up_another_and_loses_nothing(
    bus: Bus, endpoint: Endpoint, tmp_path: Path,
) -> None:
    ids = _publish_for_one_child(bus, seed=74, count=4)
    # The slow partner answers 503 twice per event of ours, and slowly.
    endpoint.answer = lambda event_id, attempt: 503 if event_id in ids and attempt <= 2 else 200
    endpoint.delay_s = lambda event_id: 0.5 if event_id in ids else 0.0
    slow = WebhookSink(endpoint.url, SECRET, base_backoff_s=0.2, max_backoff_s=0.5, name="webhook-slow")
    drop = tmp_path / "fast"
    fast = FileDropSink(drop, "northshire-csc", name="filedrop-fast")
    done: dict[str, float] = {}

    def run(partner: str, sink: WebhookSink | FileDropSink, key: str) -> None:
        run_delivery(access=bus.access(delivery_name(partner)),
                 partner=partner, sink=sink, state_dir=tmp_path, idle_timeout_s=3)
        done[key] = time.monotonic()

    threads = [threading.Thread(target=run, args=("oakfield-primary", slow, "slow")),
               threading.Thread(target=run, args=("northshire-csc", fast, "fast"))]
    for t in threads:
        t.start()

    def fast_has_all() -> bool:
        lines = [json.loads(x) for f in drop.glob("*.jsonl") for x in f.read_text().splitlines()]
        return set(ids) <= {r["event_id"] for r in lines}

    wait_for(fast_has_all, 60, what="the fast partner to receive every event")
    slow_count_then = len([e for e, _, _ in endpoint.accepted if e in ids])
    assert slow_count_then < len(ids)  # the slow partner was still working when the fast one finished
    for t in threads:
        t.join(timeout=120)
    assert [e for e, _, _ in endpoint.accepted if e in ids] == ids  # nothing lost, none twice, in order
    assert done["fast"] < done["slow"]
