"""The compose evaluation cluster: three KRaft nodes configured from the local stack's own
template (same security), reachable from this machine's loopback only; its PKI private."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml
from cryptography import x509

from bus.deploy.compose import HOSTS, NODE_CERT, write_pki

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"


def props(node: int) -> dict[str, str]:
    lines = (COMPOSE / f"kafka-{node}.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_three_kraft_nodes_each_controller_and_broker_replicating_three_times() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert sorted(doc["services"]) == ["kafka-1", "kafka-2", "kafka-3"]
    for node in (1, 2, 3):
        p = props(node)
        assert p["node.id"] == str(node) and p["process.roles"] == "broker,controller"
        assert p["controller.quorum.voters"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert (p["default.replication.factor"], p["min.insync.replicas"]) == ("3", "2")
        assert p["transaction.state.log.min.isr"] == "2" and p["unclean.leader.election.enable"] == "false"


def test_every_listener_is_tls_and_nothing_is_allowed_without_an_acl() -> None:
    for node in (1, 2, 3):
        p = props(node)
        protocols = dict(x.split(":") for x in p["listener.security.protocol.map"].split(","))
        listeners = {x.split(":")[0] for x in p["listeners"].split(",")}
        assert listeners == set(protocols) and set(protocols.values()) <= {"SSL", "SASL_SSL"}
        assert p["listener.name.internal.ssl.client.auth"] == "required"
        assert p["listener.name.controller.ssl.client.auth"] == "required"
        assert p["allow.everyone.if.no.acl.found"] == "false"
        assert p["super.users"] == f"User:admin;User:CN={NODE_CERT},O=sgbus partnership"


def test_only_this_machines_loopback_reaches_the_cluster() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    for svc in doc["services"].values():
        assert all(port.startswith("127.0.0.1:") for port in svc["ports"])


def test_compose_pki_is_private_and_names_every_node(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    written = write_pki(tmp_path / "home", out)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0 or path.name == "ca.pem", path.name
    cert = x509.load_pem_x509_certificates((out / "node.keystore.pem").read_bytes())[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(n.value) for n in sans}
    assert set(HOSTS) <= names
    env = (out / "compose.env").read_text()
    assert "SGBUS_ADMIN_PASSWORD=" in env and "SGBUS_CLUSTER_ID=" in env
    write_pki(tmp_path / "home", out)  # again: same cluster id (formatted storage stays valid)
    assert (out / "compose.env").read_text() == env
