"""One real Kafka + OPA stack and one worker per test session, started with the same code as
`sgbus stack up` and `sgbus worker`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bus.demo import start_worker, stop_worker
from bus.kafka_io import idempotent_producer, produce_all, read_topic
from bus.ops.serve import scraper_context
from bus.policy.data import load_partnership
from bus.provenance.registry import LocalSigners
from bus.pseudonymise.keyring import init_keyring
from bus.security.kafka_access import KafkaAccess
from bus.security.opa_auth import OpaAccess, OpaRole
from bus.security.principals import publisher_name
from bus.settings import Settings
from bus.stack import Stack, free_port
from bus.topics import AUDIT, deliver_topic, ingress_topic
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import wait_for

REPO = Path(__file__).parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@dataclass
class Bus:
    """Handles to the running stack and worker, plus helpers the tests share."""

    stack: Stack
    settings: Settings
    bootstrap: str
    opa_url: str
    metrics_url: str
    worker_log: Path
    worker: subprocess.Popen[bytes] | None = None
    worker_env: dict[str, str] | None = None
    #: the concern stage, a process of its own beside the sharing pipe's worker
    concern_worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        self.worker = start_worker(self.settings, self.worker_log, env=self.worker_env)

    def start_concern_worker(self) -> None:
        env = {**(self.worker_env or {}), "SGBUS_METRICS_PORT": "0"}
        self.concern_worker = start_worker(self.settings, self.worker_log.with_name("concern.log"), env=env,
                                           stage="concern")

    def kill_concern_worker(self) -> None:
        assert self.concern_worker is not None
        self.concern_worker.send_signal(signal.SIGKILL)
        self.concern_worker.wait(30)

    def kill_worker(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit, buffers lost."""
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(30)

    @property
    def admin(self) -> KafkaAccess:
        """The stack tooling's principal: tests read any topic with it."""
        return self.stack.access()

    def access(self, principal: str) -> KafkaAccess:
        return self.stack.access(principal)

    def opa(self, role: OpaRole) -> OpaAccess:
        return self.stack.opa_access(role)

    def publisher(self, agency: str, org_id: str | None = None) -> KafkaAccess:
        """The publisher principal of `org_id` (or of the first partner of `agency`)."""
        partners = load_partnership(self.settings.policies_dir / "data").partners
        match = [p for p in partners if p.org_id == org_id] or [p for p in partners if p.agency.value == agency]
        return self.access(publisher_name(match[0].id))

    @property
    def signers(self) -> LocalSigners:
        return LocalSigners(self.settings.home)

    def ensure_declarers(self) -> None:
        """Declarer keys for the sample emergency section's roles, registered in the bundle."""
        signers = self.signers
        have = {d.role for d in signers.registry().declarers}
        wanted = {"duty inspector": "northshire-police", "MASH manager": "northshire-csc"}
        for role, partner in wanted.items():
            if role not in have:
                signers.issue_declarer(role, partner)
        if set(wanted) - have:
            self.stack.reload_policies()

    def publish(self, events: list[dict[str, Any]], *, sign: bool = True) -> None:
        """Each event signed with its organisation's key (unless `sign` is False or it already
        carries a signature) and published as that organisation's publisher principal."""
        by_publisher: dict[tuple[str, str], list[tuple[str, bytes, bytes]]] = {}
        signers = self.signers
        for e in events:
            if sign and "signature" not in e:
                e = signers.sign(e)
            by_publisher.setdefault((e["source"]["agency"], e["source"]["org_id"]), []).append(
                (ingress_topic(e["source"]["agency"]), parse_event_dict(e).partition_key(), json.dumps(e).encode()))
        for (agency, org_id), records in by_publisher.items():
            produce_all(idempotent_producer(self.publisher(agency, org_id)), records)

    def publish_raw(self, agency: str, key: bytes, value: bytes) -> None:
        produce_all(idempotent_producer(self.publisher(agency)), [(ingress_topic(agency), key, value)])

    def records(self, topic: str, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        return [json.loads(v) for v in read_topic(self.admin, topic, timeout_s=timeout_s, to_end=True)]

    def audit_records(self, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        """Every audit record in sg.audit (each message holds one route batch's records)."""
        return [r for v in read_topic(self.admin, AUDIT, timeout_s=timeout_s, to_end=True) for r in json.loads(v)]

    def raw_values(self, topic: str) -> list[bytes]:
        return read_topic(self.admin, topic, timeout_s=3.0, to_end=True)

    def audits_for(self, event_ids: set[str], expected: int, timeout_s: float = 90.0) -> list[dict[str, Any]]:
        """The audit records about `event_ids` once `expected` are there, and once every allowed
        share among them is on its partner's topic too (the two are written by one batch, but
        topics are read as snapshots: a caller may then check deliveries straight away)."""
        def probe() -> list[dict[str, Any]] | None:
            found = [r for r in self.audit_records(timeout_s=1.5) if r["event_id"] in event_ids]
            return found if len(found) >= expected else None
        found = wait_for(probe, timeout_s, what=f"{expected} audit records")
        wanted: dict[str, set[str]] = {}
        for r in found:
            if r["decision"] == "allow":
                wanted.setdefault(str(r["recipient"]), set()).add(str(r["event_id"]))
        for partner, ids in wanted.items():
            wait_for(lambda p=partner, i=ids: i <= {json.loads(v)["event_id"]  # type: ignore[misc]
                                                    for v in self.raw_values(deliver_topic(p))},
                     timeout_s, what=f"the deliveries to {partner}")
        return found

    def metric(self, name: str) -> float:
        """The worker's own count (read as Prometheus does: TLS with the scraper's certificate)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5,  # noqa: S310 - loopback
                                    context=scraper_context(self.settings.home)) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    home = tmp_path_factory.mktemp("sgbus-home")
    settings = Settings(home=home, policies_dir=REPO / "policies")
    stack = Stack(home, REPO / "policies")
    status, _started = stack.up()
    handle: Bus | None = None
    try:
        init_keyring(settings.keyring_path)
        metrics_port = free_port()
        handle = Bus(stack, settings, status["kafka_bootstrap"], status["opa_url"],
                     f"https://127.0.0.1:{metrics_port}/metrics", home / "worker.log",
                     worker_env={"SGBUS_METRICS_PORT": str(metrics_port), "SGBUS_RETRY_MAX_BACKOFF_S": "1.0",
                                 # the operations tests read the audit stage's verification metrics
                                 "SGBUS_AUDIT_VERIFY_INTERVAL_S": "30"})
        handle.start_worker()
        handle.start_concern_worker()
        # Ready when a canary event has been routed end to end.
        s = Synth(seed=99)
        canary = s.child_protection_plan(s.child())
        handle.publish([canary])
        handle.audits_for({canary["event_id"]}, 1, timeout_s=180)
        yield handle
    finally:
        for proc in (handle.worker, handle.concern_worker) if handle is not None else ():
            if proc is not None:
                stop_worker(proc)
            if os.environ.get("SGBUS_TEST_SHOW_WORKER_LOG"):
                print((home / "worker.log").read_text())
        stack.down()
        after = stack.status()
        assert not any(after[name]["alive"] for name in ("kafka", "opa", "prometheus", "alertmanager"))
