"""Topic names and partition counts; created explicitly (Faust does not create them for us)."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus.exceptions import StackError
from bus.policy.data import Partnership
from bus.security.kafka_access import KafkaAccess
from schemas.envelope import Agency

EVENTS = "sg.events"
#: events put back for routing (`sgbus replay --failed`): every route agent reads it, and the
#: all-in-one worker, which routes what it ingests in the same batch, reads only it, not sg.events
REPLAY = "sg.replay"
AUDIT = "sg.audit"
#: signed audit chain heads, published outside the audit database; compacted (the latest head
#: per key is kept), readable by every partner
AUDIT_HEADS = "sg.audit.heads"
AUDIT_HEADS_KEY = b"audit-chain"
DLQ = "sg.dlq"
INGRESS_PREFIX = "sg.ingress."
DELIVER_PREFIX = "sg.deliver."
# Raw identifiers sit only in ingress topics, so those keep data for a day at most.
INGRESS_RETENTION_MS = 24 * 3600 * 1000
# Retention deletes whole segments only; hourly segments make raw identifiers really go after
# the retention (plus at most an hour), not when a week-long default segment fills.
INGRESS_SEGMENT_MS = 3600 * 1000
DAY_MS = 24 * 3600 * 1000
#: replication factor -1: the cluster's default.replication.factor (1 on the one-node local stack,
#: 3 with min.insync.replicas 2 on a three-broker cluster), so topics follow the cluster they are on
BROKER_DEFAULT = -1


def route_sources(route_at_ingest: bool) -> tuple[str, ...]:
    """What a route agent reads: replays always; sg.events unless its worker routes each event in
    the batch that ingested it (the all-in-one worker), where reading them back would only skip them."""
    return (REPLAY,) if route_at_ingest else (EVENTS, REPLAY)


def replay_partitions_problem(events_partitions: int, replay_partitions: int) -> str | None:
    """Why a stage route worker must not start on these partition counts (REPLAY_PARTITIONS), or
    None. Counts changed by hand on a cluster could bring back shared transactional ids."""
    if replay_partitions == 0:
        return (f"{REPLAY} is not on the cluster: create it first (`sgbus stack up`, or apply "
                f"deploy/strimzi/topics.yaml), with more partitions than {EVENTS}")
    if replay_partitions <= events_partitions:
        return (f"{REPLAY} has {replay_partitions} partitions and {EVENTS} {events_partitions}: {REPLAY} needs more, "
                f"or a route worker's transactional ids for it would be {EVENTS}' own (add partitions to {REPLAY})")
    return None


def live_partitions(access: KafkaAccess, topics: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """How many partitions each of `topics` has on the cluster (0: not there)."""
    admin = AdminClient(access.librdkafka(log_level=0))
    found = admin.list_topics(timeout=timeout_s).topics
    return {t: len(found[t].partitions) if t in found else 0 for t in topics}


def ingress_topic(agency: Agency | str) -> str:
    return INGRESS_PREFIX + (agency.value if isinstance(agency, Agency) else agency)


def deliver_topic(partner_id: str) -> str:
    return DELIVER_PREFIX + partner_id


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


#: sg.events partitions; the concern table's changelog has as many (one child: one partition)
EVENTS_PARTITIONS = 4
#: sg.replay partitions: more than sg.events has, never as many. Faust numbers a stage's topic
#: groups by partition count, and an exactly-once stage's transactional ids carry that number:
#: with as many partitions, sg.replay's ids were sg.events' own, and during a rolling upgrade (some
#: route workers reading sg.events only) two workers could hold one id and fence each other.
#: More, not fewer, so that sg.events keeps its number, and with it the ids that fence the
#: route workers of an earlier release.
REPLAY_PARTITIONS = 2 * EVENTS_PARTITIONS


def topic_specs(partnership: Partnership) -> list[TopicSpec]:
    specs = [
        # The broker stamps each ingress record as it appends it: the publisher's own clock never
        # feeds the end-to-end latency metric (or anything else).
        TopicSpec(ingress_topic(a), 2, {"retention.ms": str(INGRESS_RETENTION_MS),
                                        "segment.ms": str(INGRESS_SEGMENT_MS),
                                        "message.timestamp.type": "LogAppendTime"}) for a in Agency
    ]
    # sg.audit has one partition: one audit agent at a time writes the one hash chain, in order.
    specs += [TopicSpec(EVENTS, EVENTS_PARTITIONS), TopicSpec(REPLAY, REPLAY_PARTITIONS), TopicSpec(AUDIT, 1),
              TopicSpec(DLQ, 1), TopicSpec(AUDIT_HEADS, 1, {"cleanup.policy": "compact"})]
    specs += [TopicSpec(deliver_topic(p.id), 2, {"retention.ms": str(deliver_retention_ms(partnership, p.id))})
              for p in partnership.partners]
    return specs


def deliver_retention_ms(partnership: Partnership, partner_id: str) -> int:
    """A partner's topic keeps its deliveries as long as the longest `retention_days` of the
    agreements (the emergency one included) that can send to it (a week when none does yet)."""
    days = [a.retention_days for a in partnership.agreements if partner_id in a.recipients]
    partner, emergency = partnership.partner(partner_id), partnership.emergency
    if partner is not None and emergency is not None and partner.agency in emergency.recipient_agencies and any(
            s.partner == partner_id and s.purpose in emergency.recipient_purposes for s in partnership.subscriptions):
        days.append(emergency.retention_days)
    return (max(days) if days else 7) * DAY_MS


#: topics whose partition count the bus relies on: the audit records of one hash chain, read by
#: one audit agent in order; a child's events on one partition, with the concern table's changelog
#: created with as many (and Faust's topic groups, hence stage workers' transactional ids, numbered
#: by these counts). sg.audit.heads is not among them: its readers take the highest head of all its
#: partitions (bus/audit/heads.py), and it must never be recreated (it is the evidence against a
#: rolled-back audit store).
FIXED_PARTITIONS = (EVENTS, AUDIT)


def partition_problems(specs: list[TopicSpec], live: dict[str, int]) -> list[str]:
    """Why existing topics' partition counts (`live`; missing topics absent or 0) would break the
    bus, one sentence each. Topics in FIXED_PARTITIONS must have their spec's count and sg.replay
    more than sg.events; an ingress, partner, dead-letter or heads topic may have more (or fewer):
    only its throughput and its readers' parallelism change."""
    wanted = {s.name: s.partitions for s in specs}
    problems = [f"{name} has {live[name]} partitions, the bus needs exactly {wanted[name]}: recreate it with "
                f"{wanted[name]} once it is drained (README \"Upgrading a running bus\")"
                for name in FIXED_PARTITIONS if live.get(name) and name in wanted and live[name] != wanted[name]]
    if live.get(REPLAY):
        problem = replay_partitions_problem(live.get(EVENTS) or wanted.get(EVENTS, EVENTS_PARTITIONS), live[REPLAY])
        if problem is not None:
            problems.append(problem)
    return problems


def check_partition_counts(access: KafkaAccess, specs: list[TopicSpec], timeout_s: float = 30.0) -> None:
    """StackError naming each topic whose partition count would break the bus (partition_problems):
    a count changed by hand is found by `stack up` / `partners sync` rather than by a worker.
    Called after the topics are created and the principals synced, so that a refused count never
    holds back taking a removed partner's access away."""
    admin = AdminClient(access.librdkafka(log_level=0))
    found = admin.list_topics(timeout=timeout_s).topics
    problems = partition_problems(specs, {name: len(found[name].partitions) for name in found})
    if problems:
        raise StackError("; ".join(problems))


def create_topics(access: KafkaAccess, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet and bring the retention settings of existing
    ones in line (agreements change); returns the names created. `access`: the admin."""
    admin = AdminClient(access.librdkafka(log_level=0))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    todo = [s for s in specs if s.name not in existing]
    _align_configs(admin, [s for s in specs if s.name in existing and s.config], timeout_s)
    if not todo:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=BROKER_DEFAULT, config=s.config)
         for s in todo],
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


def _align_configs(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    """Set each spec's config keys on its existing topic (incrementally: other keys untouched)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    if not specs:
        return
    resources = [ConfigResource(ResourceType.TOPIC, s.name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sorted(s.config.items())])
        for s in specs]
    for res, fut in admin.incremental_alter_configs(resources).items():
        try:
            fut.result(timeout_s)
        except Exception as exc:  # the broker's error names the topic and the key
            raise StackError(f"could not set the configuration of {res.name}: {exc}") from None


def ensure_compacted_topic(access: KafkaAccess, name: str, partitions: int, timeout_s: float = 30.0) -> bool:
    """Create a compacted topic (a Faust table's changelog) unless it exists; True if created.
    `access`: a principal with CREATE on the name (a stage, within its own prefix)."""
    admin = AdminClient(access.librdkafka(log_level=0))
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=BROKER_DEFAULT,
                                            config={"cleanup.policy": "compact"})], operation_timeout=timeout_s)
    try:
        futures[name].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
        return False
    return True
