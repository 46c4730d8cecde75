"""The Strimzi resources `sgbus deploy render` writes: valid against Strimzi 1.2.0's own CRD
schemas (unknown fields rejected), and carrying exactly the topics and ACLs of the security
model, so the cluster cannot drift from policies/data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bus.deploy.check import strimzi_validator
from bus.deploy.render import drifted, rendered
from bus.deploy.strimzi import MIN_INSYNC, REPLICAS, kafka_topics, kafka_users
from bus.policy.data import Partnership, load_partnership
from bus.security.principals import principals
from bus.topics import topic_specs

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"


def committed(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "deploy" / "strimzi" / name).read_text()) if d]


def partnership() -> Partnership:
    return load_partnership(POLICIES / "data")


def test_committed_deploy_files_match_the_partnership_data() -> None:
    assert drifted(REPO, rendered(REPO, POLICIES)) == []


def test_every_strimzi_resource_is_valid_against_strimzis_own_schema() -> None:
    check = strimzi_validator(REPO / "tests" / "data" / "strimzi" / "crd-schemas-1.2.0.json")
    docs = [d for name in ("kafka.yaml", "topics.yaml", "users.yaml") for d in committed(name)
            if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {d["kind"] for d in docs} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    assert [p for d in docs for p in check(d)] == []


def test_the_schema_check_rejects_a_field_strimzi_does_not_document() -> None:
    check = strimzi_validator(REPO / "tests" / "data" / "strimzi" / "crd-schemas-1.2.0.json")
    user = kafka_users(partnership(), "sgbus")[1]
    user["spec"]["authorization"]["acls"][0]["operation"] = "Read"  # singular: not Strimzi's field
    problems = check(user)
    assert problems and "operation" in problems[0]
    topic = kafka_topics(partnership(), "sgbus")[0]
    topic["spec"]["replicas"] = "three"
    assert check(topic)


def test_cluster_is_three_kraft_nodes_with_tls_scram_and_acls() -> None:
    pool, kafka = [d for d in committed("kafka.yaml") if d["kind"] in ("KafkaNodePool", "Kafka")]
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    spec = kafka["spec"]["kafka"]
    assert all(lst["tls"] and lst["authentication"]["type"] == "scram-sha-512" for lst in spec["listeners"])
    assert spec["authorization"] == {"type": "simple"}  # no super user: Strimzi would read "User:" + name
    assert kafka["spec"]["clusterCa"] == {"generateCertificateAuthority": False}  # the partnership CA
    assert spec["config"]["min.insync.replicas"] == MIN_INSYNC and spec["config"]["default.replication.factor"] == 3
    assert spec["config"]["auto.create.topics.enable"] is False


def test_topics_are_the_stacks_topics_replicated_three_times() -> None:
    topics = {d["spec"]["topicName"]: d for d in committed("topics.yaml")}
    for spec in topic_specs(partnership()):
        t = topics[spec.name]["spec"]
        assert t["partitions"] == spec.partitions and t["replicas"] == REPLICAS
        assert {k: str(v) for k, v in t["config"].items()} == {"min.insync.replicas": str(MIN_INSYNC), **spec.config}
    assert "concern.sgbus-concern-changelog" in topics  # the concern table's changelog, compacted
    assert topics["concern.sgbus-concern-changelog"]["spec"]["config"]["cleanup.policy"] == "compact"


def test_users_carry_exactly_the_security_models_acls() -> None:
    users = {d["metadata"]["name"]: d for d in committed("users.yaml")}
    model = {p.name: p for p in principals(partnership()) if p.name not in ("admin", "sgbus-worker")}
    assert "admin" not in users  # no super user of ours in Kubernetes
    # Nor the all-in-one worker's principal: the chart runs one process per stage, and an unused
    # password with every stage's rights would only be a risk.
    assert "sgbus-worker" not in users
    assert set(users) == set(model)
    op = {"read": "Read", "write": "Write", "describe": "Describe", "create": "Create",
          "idempotent_write": "IdempotentWrite"}
    for name, principal in model.items():
        acls = users[name]["spec"].get("authorization", {}).get("acls", [])
        got = {(a["resource"]["type"], a["resource"].get("name"), a["resource"].get("patternType"),
                a["operations"][0]) for a in acls}
        want = {({"transactional_id": "transactionalId"}.get(g.resource, g.resource),
                 None if g.resource == "cluster" else g.name,
                 None if g.resource == "cluster" else {"prefixed": "prefix"}.get(g.pattern, g.pattern),
                 op[g.operation]) for g in principal.grants}
        assert got == want, name
        assert all(a["type"] == "allow" for a in acls)


def test_a_new_partner_is_drift_until_rendered(tmp_path: Path) -> None:
    """Editing partners.yaml without re-rendering is caught: the partner's topic and users appear."""
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    partners = policies / "data" / "partners.yaml"
    data = yaml.safe_load(partners.read_text())
    first = data["partners"][0]
    data["partners"].append({**first, "id": "eastshire-police", "org_id": "ESP", "name": "Eastshire Police"})
    partners.write_text(yaml.safe_dump(data))
    stale = drifted(REPO, rendered(REPO, policies))
    assert "deploy/strimzi/topics.yaml" in stale and "deploy/strimzi/users.yaml" in stale
