"""Topic names and partition counts; created explicitly (Faust does not create them for us)."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus.exceptions import StackError
from bus.policy.data import Partnership
from schemas.envelope import Agency

EVENTS = "sg.events"
AUDIT = "sg.audit"
DLQ = "sg.dlq"
INGRESS_PREFIX = "sg.ingress."
DELIVER_PREFIX = "sg.deliver."
# Raw identifiers sit only in ingress topics, so those keep data for a day at most.
INGRESS_RETENTION_MS = 24 * 3600 * 1000


def ingress_topic(agency: Agency | str) -> str:
    return INGRESS_PREFIX + (agency.value if isinstance(agency, Agency) else agency)


def deliver_topic(partner_id: str) -> str:
    return DELIVER_PREFIX + partner_id


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(partnership: Partnership) -> list[TopicSpec]:
    specs = [
        TopicSpec(ingress_topic(a), 2, {"retention.ms": str(INGRESS_RETENTION_MS)}) for a in Agency
    ]
    # sg.audit has one partition: one audit agent at a time writes the one hash chain, in order.
    specs += [TopicSpec(EVENTS, 4), TopicSpec(AUDIT, 1), TopicSpec(DLQ, 1)]
    specs += [TopicSpec(deliver_topic(p.id), 2) for p in partnership.partners]
    return specs


def create_topics(bootstrap: str, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    todo = [s for s in specs if s.name not in existing]
    if not todo:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config) for s in todo],
        operation_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a racing creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"could not create topic {name}: {exc}") from None
    return created
