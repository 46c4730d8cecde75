"""The HTTPS gateway on the real stack: who may call it, publishing, mailboxes, tracking."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bus.demo import start_gateway, stop_worker
from bus.gateway.client import GatewayClient
from bus.gateway.identity import PartnerCerts
from bus.gateway.openapi import COMMITTED
from bus.gateway.state import state_path
from bus.ops.serve import scraper_context
from bus.security.pki import Issued, ca_path
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus

PARTNERS = ("northshire-police", "oakfield-primary", "northshire-csc", "riverside-academy", "northshire-nhs-uec")


@dataclass
class Gateway:
    bus: Bus
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str = ""

    def __post_init__(self) -> None:
        self.metrics_url = json.loads(state_path(self.bus.settings.home).read_text())["metrics_url"]

    def client(self, partner: str | None) -> GatewayClient:
        cert = PartnerCerts(self.bus.settings.home).local(partner) if partner else None
        return GatewayClient(self.url, cert, ca_path(self.bus.settings.home))

    def restart(self) -> None:
        stop_worker(self.proc)
        self.proc, self.url = start_gateway(self.bus.settings, self.log)
        self.__post_init__()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5,  # noqa: S310 - loopback
                                    context=scraper_context(self.bus.settings.home)) as resp:
            return str(resp.read().decode())


@pytest.fixture(scope="module")
def gateway(bus: Bus) -> Iterator[Gateway]:
    certs = PartnerCerts(bus.settings.home)
    for partner in PARTNERS:
        if certs.local(partner) is None:
            certs.issue(partner)
    log = bus.settings.home / "gateway.log"
    proc, url = start_gateway(bus.settings, log)
    handle = Gateway(bus, url, proc, log)
    try:
        yield handle
    finally:
        stop_worker(handle.proc)


def _dai(s: Synth, child: dict[str, Any], school: str = "900001") -> dict[str, Any]:
    return s.domestic_abuse_incident(child, school_urn=school)


def test_without_a_certificate_only_health_and_the_openapi_document_answer(gateway: Gateway) -> None:
    with gateway.client(None) as anonymous:
        assert anonymous.http.get("/healthz").json() == {"status": "ok", "kafka": True}
        assert anonymous.http.get("/openapi.json").json() == json.loads(COMMITTED.read_text())
        for reply in (anonymous.mailbox(), anonymous.publish({"event_id": "x"}),
                      anonymous.status("9b2f7c1e-0000-4000-8000-000000000000"), anonymous.ack("c1.x")):
            assert (reply.status, reply.body["code"]) == (401, "no_client_certificate")


def _foreign_ca_cert(tmp: Path) -> Issued:
    """A CA and client certificate the partnership never issued (same names as a real one)."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgbus partnership"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("sgbus partnership CA")).issuer_name(name("sgbus partnership CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("gateway-client.northshire-police")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    out = Issued(tmp / "k.pem", tmp / "c.pem", tmp / "ca.pem")
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    out.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return out


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(gateway: Gateway, tmp_path: Path) -> None:
    forged = _foreign_ca_cert(tmp_path)
    with GatewayClient(gateway.url, forged, ca_path(gateway.bus.settings.home)) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            client.mailbox()


def test_a_partnership_certificate_not_registered_to_a_partner_or_revoked_is_refused(gateway: Gateway) -> None:
    home = gateway.bus.settings.home
    node = gateway.bus.stack._node_cert()  # the Kafka node's certificate: same CA, clientAuth, no partner
    with GatewayClient(gateway.url, node, ca_path(home)) as client:
        assert client.mailbox().body["code"] == "unknown_client_certificate"
    certs = PartnerCerts(home)
    issued, entry = certs.issue("northshire-nhs-uec", out=home / "handover-nhs")
    with GatewayClient(gateway.url, issued, issued.ca) as client:
        assert client.mailbox().status == 200
        certs.revoke(entry.fingerprint)
        assert (client.mailbox().status, client.mailbox().body["code"]) == (401, "unknown_client_certificate")


def test_a_school_cannot_publish_a_police_event_and_the_force_can_exactly_once(gateway: Gateway) -> None:
    s = Synth(seed=161)
    event = gateway.bus.signers.sign(_dai(s, s.child()))
    with gateway.client("oakfield-primary") as school:
        reply = school.publish(event)
        assert (reply.status, reply.body["code"]) == (403, "not_your_source")
        assert reply.body["errors"][0]["field"] == "source.agency"
        # the school learnt the id: its own event under that id does not block the force's
        squat = gateway.bus.signers.sign({**s.attendance_concern(s.child(), school_urn="900001"),
                                          "event_id": event["event_id"]})
        assert school.publish(squat).status == 202
    with gateway.client("northshire-police") as force:
        first = force.publish(event)
        assert first.status == 202 and first.body["topic"] == "sg.ingress.police"
        again = force.publish(event)  # a retry after a lost response
        assert (again.status, again.body) == (202, first.body)
        changed = gateway.bus.signers.sign({**event, "payload": {**event["payload"], "risk_grade": "high"}})
        conflict = force.publish(changed)
        assert (conflict.status, conflict.body["code"]) == (409, "duplicate_event_id")
        status = wait_for(lambda: (r := force.status(event["event_id"])).body.get("state") == "ingested" and r,
                          90, what="the event ingested")
        # DSA-OE-001 lets the force know which school it notified; DSA-OE-002 (the MASH) only counts
        assert status.body["shared_with"] == 2 and status.body["recipients"] == ["oakfield-primary"]
    with gateway.client("oakfield-primary") as school:
        # the school tracks only its own event under that id, never the force's
        own = school.status(event["event_id"]).body
        assert own["received_at"] != status.body["received_at"] and "recipients" not in own
    with gateway.client("riverside-academy") as other_school:
        assert other_school.status(event["event_id"]).status == 404  # nothing of its own under that id


def test_invalid_and_oversized_events_get_problem_details_naming_the_field_only(gateway: Gateway) -> None:
    s = Synth(seed=162)
    event = _dai(s, s.child())
    event["payload"]["risk_grade"] = "Kerry-Ann Blackwood"
    with gateway.client("northshire-police") as force:
        reply = force.publish(gateway.bus.signers.sign(event))
        assert reply.status == 422 and reply.body["errors"][0]["field"] == "payload.risk_grade"
        assert "Kerry" not in json.dumps(reply.body)
        big = force.http.post("/v1/events", content=b'{"x": "' + b"a" * 400_000 + b'"}',
                              headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.headers["content-type"].startswith("application/problem+json")
        batch = force.publish_batch([gateway.bus.signers.sign(_dai(s, s.child())), {"event_type": "nope"}])
        assert batch.status == 200 and [r["status"] for r in batch.body["results"]] == [202, 422]
        assert force.http.post("/v1/events:batch", json={"events": [{}] * 501}).status_code == 422
    assert "Kerry" not in gateway.log.read_text()


def test_status_says_dead_lettered_when_ingest_refuses_what_the_gateway_took(gateway: Gateway) -> None:
    s = Synth(seed=163)
    first = _dai(s, s.child())
    gateway.bus.publish([first])  # straight to Kafka, as a force's own client would
    clash = gateway.bus.signers.sign({**_dai(s, s.child()), "event_id": first["event_id"]})
    with gateway.client("northshire-police") as force:
        assert force.publish(clash).status == 202
        status = wait_for(lambda: (r := force.status(clash["event_id"])).body.get("state") == "dead_lettered" and r,
                          90, what="the dead letter tracked")
    assert status.body["reasons"] == [{"field": "event_id", "code": "duplicate_event_id"}]
    assert status.body["shared_with"] == 0


def _drain(client: GatewayClient) -> None:
    """Acknowledge whatever earlier tests left in the mailbox."""
    while True:
        page = client.mailbox(limit=500).body
        client.ack(page["cursor"])
        if not page["more"]:
            return


def test_deliveries_are_collected_exactly_once_in_order_across_a_gateway_restart(gateway: Gateway) -> None:
    s = Synth(seed=164)
    children = [s.child(), s.child()]
    events = [gateway.bus.signers.sign(_dai(s, children[i % 2], school="900002")) for i in range(6)]
    ids = [e["event_id"] for e in events]

    def ours(items: list[dict[str, Any]]) -> list[str]:
        return [i["event"]["event_id"] for i in items if i["event"]["event_id"] in ids]

    with gateway.client("riverside-academy") as school:
        _drain(school)
        with gateway.client("northshire-police") as force:
            assert force.publish_batch(events).body["accepted"] == 6
        wait_for(lambda: len(ours(school.mailbox(limit=500).body["items"])) == 6, 90, what="6 deliveries")
        page1 = school.mailbox(limit=3).body
        assert len(page1["items"]) == 3 and page1["more"]
    gateway.restart()
    with gateway.client("riverside-academy") as school:
        again = school.mailbox(limit=3).body  # not acknowledged: delivered again, the same
        assert again["items"] == page1["items"] and again["cursor"] == page1["cursor"]
        page2 = school.mailbox(after=page1["cursor"], limit=500).body
        collected = ours(page1["items"]) + ours(page2["items"])
        assert sorted(collected) == sorted(ids) and len(collected) == 6  # none missing, none twice
        for child in children:  # one child's deliveries in the order they were published
            theirs = [e["event_id"] for e in events if e["subject"]["identifiers"] == child["identifiers"]]
            assert [i for i in collected if i in theirs] == theirs
        assert school.ack(page2["cursor"]).body["advanced"] is True
        assert school.ack(page1["cursor"]).body["advanced"] is False  # an old cursor changes nothing
        assert school.mailbox().body["items"] == []
    metrics = gateway.metrics()
    assert 'sgbus_gateway_requests_total{partner="riverside-academy",route="/v1/mailbox",status="200"}' in metrics


def test_a_second_call_on_a_busy_mailbox_is_told_to_retry_not_queued(gateway: Gateway) -> None:
    import threading

    with gateway.client("northshire-nhs-uec") as first, gateway.client("northshire-nhs-uec") as second:
        _drain(first)
        long_poll = threading.Thread(target=first.mailbox, kwargs={"wait": 3})
        long_poll.start()
        try:
            reply = wait_for(lambda: (r := second.mailbox()).status == 429 and r, 3, interval_s=0.05,
                             what="the second read refused")
        finally:
            long_poll.join()
        assert reply.body["code"] == "mailbox_busy"
        assert second.mailbox().status == 200  # and served once the first is done


def test_a_partner_cannot_use_another_partners_mailbox_cursor(gateway: Gateway) -> None:
    with gateway.client("oakfield-primary") as school, gateway.client("northshire-csc") as mash:
        cursor = school.mailbox(limit=1).body["cursor"]
        reply = mash.mailbox(after=cursor)
        assert (reply.status, reply.body["code"]) == (422, "invalid_cursor")
        assert mash.ack(cursor).status == 422


def test_a_partner_over_its_rate_gets_429_with_retry_after(bus: Bus, gateway: Gateway) -> None:
    # a second gateway with a small allowance, so the main one's limit is not disturbed
    proc, url = start_gateway(bus.settings, bus.settings.home / "gateway-limited.log",
                              env={"SGBUS_GATEWAY_RATE": "0.5", "SGBUS_GATEWAY_BURST": "2"})
    try:
        with GatewayClient(url, PartnerCerts(bus.settings.home).local("northshire-police"),
                           ca_path(bus.settings.home)) as force:
            replies = [force.http.post("/v1/events", json={}) for _ in range(3)]
        assert [r.status_code for r in replies] == [422, 422, 429]
        assert replies[2].headers["Retry-After"] == "2"
        assert replies[2].json()["code"] == "rate_limited"
    finally:
        stop_worker(proc)


def test_every_endpoint_matches_the_committed_openapi_document(gateway: Gateway) -> None:
    """Schemathesis, from schemas/openapi.json, with a partner's valid certificate."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks
    from schemathesis.generation import GenerationMode

    home = gateway.bus.settings.home
    cert = PartnerCerts(home).local("northshire-police")
    assert cert is not None
    tls = {"cert": (str(cert.cert), str(cert.key)), "verify": str(ca_path(home)), "timeout": 30}
    from schemathesis.config import SchemathesisConfig

    # Invalid input must be refused with a 4xx; 413 (a body over the limit) is one of them here.
    refused = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": refused}}})
    schema = schemathesis.openapi.from_path(COMMITTED, config=config)
    wanted = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
              checks.response_schema_conformance, checks.response_headers_conformance]

    def runner(operation: Any, mode: Any, use: list[Any]) -> Any:
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(base_url=gateway.url, checks=use, **tls)
        return run

    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        runner(operation, GenerationMode.POSITIVE, wanted)()
        tried += 1
        if operation.path not in ("/healthz", "/openapi.json"):  # nothing there to get wrong
            runner(operation, GenerationMode.NEGATIVE, [*wanted, checks.negative_data_rejection])()
            tried += 1
    assert tried == 12  # seven operations with valid input, the five that take input also with invalid
    log = gateway.log.read_text()
    assert "Traceback" not in log and "%C2" not in log  # no request content in the log, even of a malformed one


def test_the_readme_curl_calls_work_against_the_live_gateway(gateway: Gateway, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    calls = [line for line in readme.splitlines() if line.startswith("curl --cacert $CERTS/ca.pem")]
    assert len(calls) == 7
    home = gateway.bus.settings.home
    certs = PartnerCerts(home)
    police, school = tmp_path / "police", tmp_path / "school"
    certs.issue("northshire-police", out=police)
    certs.issue("oakfield-primary", out=school)
    s = Synth(seed=165)
    event = gateway.bus.signers.sign(_dai(s, s.child()))
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "batch.json").write_text(json.dumps({"events": [gateway.bus.signers.sign(_dai(s, s.child()))]}))
    env = {"GW": gateway.url, "CERTS": str(police), "EVENT_ID": event["event_id"], "CURSOR": ""}
    for call in calls:
        if "/v1/mailbox" in call:
            env["CERTS"] = str(school)
        result = subprocess.run(["bash", "-c", call + " -s -o body.json -w '%{http_code}'"], cwd=tmp_path,
                                env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
                                check=False)
        body = json.loads((tmp_path / "body.json").read_text())
        assert result.stdout in {"200", "202"}, (call, result.stdout, body)
        if "mailbox?" in call:
            env["CURSOR"] = body["cursor"]
    assert body == {"cursor": env["CURSOR"], "advanced": body["advanced"]}
