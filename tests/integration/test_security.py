"""The locked-down bus, tried as an attacker on the same host would: no credentials, a nosy
partner, a publisher writing where it must not, anyone rewriting OPA's policies."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bus.policy.bundle import PolicyKey, build_bundle, ensure_policy_key, new_policy_key
from bus.security.opa_auth import local_token, token_hashes
from bus.security.principals import publisher_name
from bus.stack import free_port
from bus.topics import AUDIT, DLQ, EVENTS, deliver_topic, ingress_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus

OWN = "northshire-nhs-uec"  # receives the session's canary (a child protection plan)
OTHER = "northshire-csc"
DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def _sgbus(bus: Bus, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SGBUS_HOME": str(bus.settings.home),
                "SGBUS_POLICIES_DIR": str(bus.settings.policies_dir), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, env=full_env,
                          timeout=300, check=False)


def _partner_properties(bus: Bus, partner: str, *extra: str) -> dict[str, Any]:
    result = _sgbus(bus, "partners", "credentials", partner, "--json", *extra)
    assert result.returncode == 0, result.stderr
    props: dict[str, Any] = json.loads(result.stdout)
    return props


def _read_outcome(props: dict[str, Any], topic: str, timeout_s: float = 15.0) -> str:
    """'read' when a record arrives; 'denied' when the broker refuses the topic (metadata says
    TOPIC_AUTHORIZATION_FAILED) and no record arrives either; else 'nothing'."""
    consumer = Consumer({**props, "log_level": 0})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        refused = meta.error is not None and meta.error.code() in DENIED
        # An unauthorised client is not even told how many partitions there are: try them all.
        partitions = list(meta.partitions) or [0, 1, 2, 3]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

        def probe() -> bool:
            msg = consumer.poll(0.5)
            return msg is not None and msg.error() is None

        try:
            wait_for(probe, 3.0 if refused else timeout_s, interval_s=0, what=f"a record from {topic}")
        except AssertionError:
            return "denied" if refused else "nothing"
        return "read"
    finally:
        consumer.close()


def _write_outcome(props: dict[str, Any], topic: str) -> KafkaError | None:
    """The delivery error of one produce (None: the broker took it)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**props, "log_level": 0, "message.timeout.ms": 15000})
    producer.produce(topic, key=b"k", value=b'{"forged": true}', on_delivery=lambda err, _m: errors.append(err))
    producer.flush(30)
    assert errors, f"no delivery report for {topic}"
    return errors[0]


def test_a_client_without_credentials_can_neither_read_nor_write(bus: Bus) -> None:
    ca = str(bus.settings.home / "pki" / "ca.pem")
    attempts: list[dict[str, Any]] = [
        {"bootstrap.servers": bus.bootstrap},  # plaintext to a TLS listener
        {"bootstrap.servers": bus.bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca},  # TLS, no SASL
        {"bootstrap.servers": bus.bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": ca,
         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin", "sasl.password": "guessed"},
    ]
    for props in attempts:
        consumer = Consumer({**props, "group.id": "nosy", "log_level": 0, "socket.timeout.ms": 5000})
        try:
            with pytest.raises(KafkaException):
                consumer.list_topics(timeout=5)
        finally:
            consumer.close()
        producer = Producer({**props, "log_level": 0, "message.timeout.ms": 4000})
        outcome: list[object] = []
        producer.produce(ingress_topic("police"), value=b"{}", on_delivery=lambda err, _m, out=outcome: out.append(err))
        producer.flush(15)
        assert outcome and outcome[0] is not None, props.get("security.protocol", "PLAINTEXT")


def test_a_partner_reads_its_own_topic_and_nothing_else(bus: Bus) -> None:
    props = _partner_properties(bus, OWN)
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["group.id"].startswith(f"partner.{OWN}.")
    # Someone else's topic holds records too, so "denied" is the broker refusing, not emptiness.
    wait_for(lambda: bus.raw_values(deliver_topic(OWN)), 60, what="a delivery to the partner")
    s = Synth(seed=7)
    bus.publish([s.domestic_abuse_incident(s.child(5, 10))])
    wait_for(lambda: bus.raw_values(deliver_topic(OTHER)), 60, what="a delivery to another partner")

    assert _read_outcome(props, deliver_topic(OWN)) == "read"
    for topic in (deliver_topic(OTHER), ingress_topic("police"), ingress_topic("nhs"), EVENTS, AUDIT, DLQ):
        assert _read_outcome(props, topic) == "denied", topic


def test_a_partner_must_use_its_own_consumer_group_prefix(bus: Bus) -> None:
    props = {**_partner_properties(bus, OWN), "group.id": f"partner.{OTHER}.consumer"}
    consumer = Consumer({**props, "log_level": 0})
    try:
        consumer.subscribe([deliver_topic(OWN)])
        errors = wait_for(lambda: [m.error().code() for m in [consumer.poll(0.5)] if m is not None and m.error()],
                          30, interval_s=0, what="the group refused")
        assert errors[0] == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_a_partner_cannot_write_anything(bus: Bus) -> None:
    props = _partner_properties(bus, OWN)
    for topic in (deliver_topic(OWN), ingress_topic("nhs"), AUDIT):
        err = _write_outcome(props, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic


def test_a_publisher_writes_only_its_own_agencys_ingress_topic(bus: Bus) -> None:
    props = _partner_properties(bus, "oakfield-primary", "--publisher")
    assert props["enable.idempotence"] is True
    assert props["partitioner"] == "murmur2_random"  # a key lands where the bus's own producers put it
    assert _write_outcome(props, ingress_topic("school")) is None  # not an event: the worker dead-letters it
    for topic in (ingress_topic("police"), ingress_topic("social_care"), AUDIT, EVENTS, DLQ,
                  deliver_topic("oakfield-primary"), deliver_topic(OTHER)):
        err = _write_outcome(props, topic)  # each a new producer: a producer id of its own
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic


def test_a_stage_principal_cannot_read_what_its_stage_does_not_need(bus: Bus) -> None:
    audit_stage = bus.access("sgbus-audit").librdkafka(**{"group.id": "audit.nosy"})
    assert _read_outcome(audit_stage, AUDIT) == "read"
    for topic in (ingress_topic("police"), EVENTS, deliver_topic(OWN)):
        assert _read_outcome(audit_stage, topic) == "denied", topic


def test_rotated_partner_credentials_replace_the_old_secret(bus: Bus) -> None:
    old = _partner_properties(bus, "riverside-academy")
    new = _partner_properties(bus, "riverside-academy", "--rotate")
    assert new["sasl.password"] != old["sasl.password"]
    assert _read_outcome(new, deliver_topic("riverside-academy"), timeout_s=5) in {"read", "nothing"}
    consumer = Consumer({**old, "log_level": 0})
    try:
        with pytest.raises(KafkaException):
            consumer.list_topics(timeout=5)
    finally:
        consumer.close()


def _opa_request(bus: Bus, method: str, path: str, body: bytes, token: str | None) -> int:
    req = urllib.request.Request(f"{bus.opa_url}{path}", data=body, method=method)  # noqa: S310 - https
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    tls = ssl.create_default_context(cafile=str(bus.settings.home / "pki" / "ca.pem"))
    try:
        with urllib.request.urlopen(req, timeout=5, context=tls) as resp:  # noqa: S310 - https
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_opa_speaks_only_tls_with_a_certificate_from_the_partnership_ca(bus: Bus) -> None:
    assert bus.opa_url.startswith("https://")
    plain = bus.opa_url.replace("https://", "http://") + "/health"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=5).read()  # noqa: S310 - the point is that it fails
    assert _opa_request(bus, "GET", "/health", b"", None) == 200
    untrusted = ssl.create_default_context()  # the system's CAs never signed OPA's certificate
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{bus.opa_url}/health", timeout=5, context=untrusted)  # noqa: S310


def test_opa_refuses_policy_and_data_writes_from_anyone_even_the_admin(bus: Bus) -> None:
    allow_all = b"package sgbus.share\nimport rego.v1\ndecisions := [{\"allow\": true}]\n"
    worker = local_token(bus.settings.home, "worker")
    admin = local_token(bus.settings.home, "admin")
    for token in (None, worker, "guessed", admin):
        assert _opa_request(bus, "PUT", "/v1/policies/allow_all", allow_all, token) == 401
        assert _opa_request(bus, "PUT", "/v1/data/sgbus/partnership", b"{}", token) == 401
        assert _opa_request(bus, "PUT", "/v1/data/sgbus/meta", b'{"revision": "forged"}', token) == 401
        assert _opa_request(bus, "DELETE", "/v1/policies/sgbus/share/share", b"", token) == 401
    assert _opa_request(bus, "GET", "/v1/data/system", b"", worker) == 401  # not even the token hashes
    assert _opa_request(bus, "GET", "/v1/data/sgbus/meta", b"", admin) == 200

    # The worker keeps deciding with the revision it pinned.
    revision = bus.stack.status()["opa"]["revision"]
    s = Synth(seed=23)
    event = s.child_protection_plan(s.child())
    bus.publish([event])
    audits = bus.audits_for({event["event_id"]}, 1)
    assert {a["policy_revision"] for a in audits} == {revision}


def test_partners_sync_adds_and_removes_a_partners_principals(bus: Bus, tmp_path: Path) -> None:
    proposed = tmp_path / "policies"
    shutil.copytree(REPO / "policies", proposed)
    partners_file = proposed / "data" / "partners.yaml"
    data = yaml.safe_load(partners_file.read_text())
    newcomer = f"new-school-{uuid.uuid4().hex[:6]}"
    data["partners"].append({"id": newcomer, "name": "New School", "agency": "school", "org_id": "900099",
                             "area": "northshire", "linkage_domain": "education"})
    partners_file.write_text(yaml.safe_dump(data))
    try:
        added = _sgbus(bus, "partners", "sync", env={"SGBUS_POLICIES_DIR": str(proposed)})
        assert added.returncode == 0, added.stderr
        assert "3 principals added" in added.stdout and "1 topic(s) created" in added.stdout
        publisher = bus.access(publisher_name(newcomer)).librdkafka()
        assert _write_outcome(publisher, ingress_topic("school")) is None
        from bus.gateway.identity import PartnerCerts

        PartnerCerts(bus.settings.home).issue(newcomer)
    finally:
        removed = _sgbus(bus, "partners", "sync")
    assert removed.returncode == 0, removed.stderr
    assert "3 removed" in removed.stdout
    assert not (bus.settings.home / "credentials" / f"{publisher_name(newcomer)}.json").exists()
    err = _write_outcome(publisher, ingress_topic("school"))
    assert err is not None  # the broker no longer knows the user
    # Its gateway certificates are revoked, and OPA's copy of the partnership rebuilt without it.
    assert f"revoked the gateway certificates of 1 partner(s) no longer in the data: {newcomer}" in removed.stdout
    assert all(c.revoked for c in PartnerCerts(bus.settings.home).all() if c.partner == newcomer)
    assert "policy bundle rebuilt" in removed.stderr


@pytest.mark.parametrize("forgery", ["signed with another key", "unsigned", "altered after signing"])
def test_opa_evaluates_no_policy_bundle_the_partnership_did_not_sign(bus: Bus, tmp_path: Path, forgery: str) -> None:
    """OPA started exactly as the stack starts it, but with a forged bundle: it refuses to load
    it, so no decision is ever made from it (the workers fail closed meanwhile)."""
    hashes = token_hashes(bus.settings.home)
    bundle = tmp_path / "forged.tar.gz"
    if forgery == "signed with another key":
        other = new_policy_key(PolicyKey(tmp_path / "other.key", tmp_path / "other.pub.pem"))
        build_bundle(REPO / "policies", bundle, other, hashes)
    elif forgery == "unsigned":
        build_bundle(REPO / "policies", bundle, ensure_policy_key(bus.settings.home), hashes, sign=False)
    else:
        build_bundle(REPO / "policies", bundle, ensure_policy_key(bus.settings.home), hashes)
        _alter_bundle(bundle, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("labels:\n  app: sgbus-forgery-test\n")
    result = subprocess.run(bus.stack.opa_command(free_port(), config, bundle), capture_output=True, text=True,
                            timeout=60, check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert "load error: bundle" in said
    assert {"signed with another key": "failed to verify", "unsigned": "missing .signatures.json",
            "altered after signing": "digest mismatch"}[forgery] in said


def _alter_bundle(bundle: Path, tmp_path: Path) -> None:
    """Rewrite the partnership data inside a signed bundle, keeping its signature file."""
    import tarfile

    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    data_file = next(p for p in unpacked.rglob("data.json") if '"agreements"' in p.read_text())
    data_file.write_text(data_file.read_text().replace('"agreements"', '"agreements_x"', 1))
    with tarfile.open(bundle, "w:gz") as tar:
        for path in sorted(unpacked.rglob("*")):
            if path.is_file():
                tar.add(path, arcname="/" + str(path.relative_to(unpacked)))


def _broker_cipher(bus: Bus, ctx: ssl.SSLContext) -> tuple[str, str | None]:
    host, port = bus.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0], tls.version()


def test_the_local_broker_prefers_chacha20_yet_still_accepts_a_client_offering_only_aes_gcm(bus: Bus) -> None:
    ca = bus.settings.home / "pki" / "ca.pem"
    # OpenSSL offers AES-GCM first; the broker's own order picks ChaCha20 (cheap for its C1-only JIT).
    default = ssl.create_default_context(cafile=str(ca))
    assert _broker_cipher(bus, default) == ("TLS_CHACHA20_POLY1305_SHA256", "TLSv1.3")
    aes_only = ssl.create_default_context(cafile=str(ca))
    aes_only.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3's suites cannot be narrowed from Python
    aes_only.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    assert _broker_cipher(bus, aes_only) == ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2")
