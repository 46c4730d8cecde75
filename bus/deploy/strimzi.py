"""Strimzi custom resources (kafka.strimzi.io/v1) for the partnership's cluster, built from the
same partnership data, topic specs and principals as the local stack, so they cannot drift."""

from __future__ import annotations

from typing import Any

import yaml

from bus.concern.agent import changelog_topic_name
from bus.ops.monitoring import JMX_EXPORTER_CONFIG
from bus.policy.data import Partnership
from bus.security.principals import ADMIN, STAGE_PRINCIPALS, Grant, Principal, principals, stage_app_id
from bus.topics import EVENTS_PARTITIONS, TopicSpec, topic_specs

API = "kafka.strimzi.io/v1"
#: Strimzi 1.2.0 runs Kafka 4.2.x and 4.3.x (kafka-versions.yaml); the local stack runs 4.4.0
STRIMZI_VERSION = "1.2.0"
KAFKA_VERSION = "4.3.1"
CLUSTER = "sgbus"
NODES = 3
REPLICAS = 3
MIN_INSYNC = 2

_OPERATION = {"read": "Read", "write": "Write", "describe": "Describe", "create": "Create",
              "idempotent_write": "IdempotentWrite"}
_RESOURCE = {"topic": "topic", "group": "group", "transactional_id": "transactionalId", "cluster": "cluster"}
_PATTERN = {"literal": "literal", "prefixed": "prefix"}


def _labels() -> dict[str, str]:
    return {"strimzi.io/cluster": CLUSTER, "app.kubernetes.io/part-of": "sgbus"}


def kafka_cluster(namespace: str) -> list[dict[str, Any]]:
    """One node pool of three KRaft nodes, each controller and broker; TLS everywhere, SCRAM for
    clients, ACLs required (simple authorization), replication 3 with min.insync 2."""
    pool = {
        "apiVersion": API, "kind": "KafkaNodePool",
        "metadata": {"name": "dual-role", "namespace": namespace, "labels": _labels()},
        "spec": {
            "replicas": NODES, "roles": ["controller", "broker"],
            "storage": {"type": "jbod", "volumes": [
                {"id": 0, "type": "persistent-claim", "size": "100Gi", "deleteClaim": False,
                 "kraftMetadata": "shared"}]},
            "resources": {"requests": {"memory": "2Gi", "cpu": "500m"}, "limits": {"memory": "2Gi"}},
        },
    }
    kafka = {
        "apiVersion": API, "kind": "Kafka",
        "metadata": {"name": CLUSTER, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "sgbus"}},
        "spec": {
            "kafka": {
                "version": KAFKA_VERSION,
                # Clients (sgbus's processes, partners' systems) only over TLS with SCRAM-SHA-512,
                # as on the local stack; no plain listener exists.
                "listeners": [{"name": "tls", "port": 9093, "type": "internal", "tls": True,
                               "authentication": {"type": "scram-sha-512"},
                               # Only sgbus's own pods reach the brokers (partners use the gateway).
                               "networkPolicyPeers": [{"podSelector": {"matchLabels": {
                                   "sgbus.io/kafka-client": "true"}}}]}],
                # No super user of ours: Strimzi's operators administer the cluster, and every
                # sgbus principal has exactly its ACLs (the local stack's `admin` has no KafkaUser).
                "authorization": {"type": "simple"},
                "config": {
                    "default.replication.factor": REPLICAS, "min.insync.replicas": MIN_INSYNC,
                    "offsets.topic.replication.factor": REPLICAS,
                    "transaction.state.log.replication.factor": REPLICAS,
                    "transaction.state.log.min.isr": MIN_INSYNC,
                    "auto.create.topics.enable": False,
                    "unclean.leader.election.enable": False,
                    # sessions re-authenticate hourly: a rotated secret cuts off an open connection too
                    "connections.max.reauth.ms": 3_600_000,
                },
                "metricsConfig": {"type": "jmxPrometheusExporter",
                                  "valueFrom": {"configMapKeyRef": {"name": "sgbus-kafka-metrics",
                                                                    "key": "kafka-metrics-config.yml"}}},
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
            # The partnership CA is Strimzi's cluster CA (installed as Secrets before the cluster;
            # Strimzi's "custom CA" procedure), so Kafka, OPA and the gateway chain to one CA.
            "clusterCa": {"generateCertificateAuthority": False},
        },
    }
    # The broker's JMX exporter allow-list, the same as the local stack's (no per-topic names).
    metrics = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "sgbus-kafka-metrics", "namespace": namespace,
                            "labels": {"app.kubernetes.io/part-of": "sgbus"}},
               "data": {"kafka-metrics-config.yml": yaml.safe_dump(JMX_EXPORTER_CONFIG, sort_keys=False)}}
    return [metrics, pool, kafka]


def kafka_topics(partnership: Partnership, namespace: str, app_id: str = "sgbus") -> list[dict[str, Any]]:
    """A KafkaTopic for every topic `sgbus stack up` creates (same partitions and settings), and
    the concern table's changelog (which a local concern stage creates itself)."""
    out = []
    changelog = TopicSpec(changelog_topic_name(stage_app_id(app_id, "concern")), EVENTS_PARTITIONS,
                          {"cleanup.policy": "compact"})
    for spec in [*topic_specs(partnership), changelog]:
        config: dict[str, Any] = {"min.insync.replicas": MIN_INSYNC, **spec.config}
        out.append({
            "apiVersion": API, "kind": "KafkaTopic",
            # Kubernetes names allow no underscore; the Kafka name goes in topicName.
            "metadata": {"name": spec.name.replace("_", "-"), "namespace": namespace, "labels": _labels()},
            "spec": {"topicName": spec.name, "partitions": spec.partitions, "replicas": REPLICAS,
                     "config": config},
        })
    return out


def _acl(grant: Grant) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": _RESOURCE[grant.resource]}
    if grant.resource != "cluster":
        resource |= {"name": grant.name, "patternType": _PATTERN[grant.pattern]}
    return {"type": "allow", "resource": resource, "operations": [_OPERATION[grant.operation]]}


def kafka_user(principal: Principal, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"authentication": {"type": "scram-sha-512"},
                            "authorization": {"type": "simple", "acls": [_acl(g) for g in sorted(principal.grants)]}}
    labels = _labels() | {"sgbus.io/role": principal.role}
    return {"apiVersion": API, "kind": "KafkaUser",
            "metadata": {"name": principal.name, "namespace": namespace, "labels": labels}, "spec": spec}


#: principals with no KafkaUser: the local stack's tooling `admin` (a super user there; in
#: Kubernetes Strimzi's operators administer), and the all-in-one worker's, which the chart never
#: runs (one process per stage): an unused password with every stage's rights is only a risk.
NOT_IN_KUBERNETES = (ADMIN, STAGE_PRINCIPALS["all"])


def kafka_users(partnership: Partnership, namespace: str) -> list[dict[str, Any]]:
    """A KafkaUser with exactly the ACLs of the security model for every principal the chart's
    pods and operators use (not NOT_IN_KUBERNETES)."""
    return [kafka_user(p, namespace) for p in principals(partnership) if p.name not in NOT_IN_KUBERNETES]
