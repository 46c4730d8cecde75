"""Kafka principals and the ACLs each needs, derived from the partnership data (pure logic).

One principal per job, each allowed exactly its topics, consumer groups and transactional ids:

- `admin`: the stack tooling (topics, ACLs, SCRAM users, bench observers); a super user.
- `sgbus-<stage>` for `ingest`, `route`, `audit` (exactly-once stage workers), `concern` (its own process) and `worker`
  (the sharing stages in one process); groups and transactional ids start `<stage>.`.
- `publisher.<partner>`: writes only its agency's `sg.ingress.<agency>` topic.
- `partner.<partner>`: reads only `sg.deliver.<partner>` and the published audit heads
  (`sg.audit.heads`), in groups starting `partner.<partner>.`.
- `delivery.<partner>`: the webhook/file delivery connector for one partner: reads that
  partner's topic (groups `delivery.<partner>.`) and writes dead letters.
- `sgbus-replay`: `sgbus replay --failed`, run by an operator: reads the dead letters and the
  replays (whole topics, in no group it joins: groups `replay.`), sees where `sg.events` starts
  and ends (DESCRIBE, not READ: it never reads an event) and writes `sg.replay`, requests that
  name events on `sg.events` (route fetches them there itself): a deployment needs no super user
  to replay a failed view, and its password can change no event.
- `sgbus-gateway`: the HTTPS gateway, on behalf of partners it has authenticated by client
  certificate: writes ingress topics (it checks each event is the caller's own organisation's
  and signed by its key, as ingest checks again), reads partner topics for their mailboxes
  (groups `gateway.`) and the dead letters (to tell a publisher what became of its event).

Every group and transactional-id prefix starts with its kind (`ingest.`, `route.`, `audit.`,
`worker.`, `partner.`, `delivery.`) and ends with a dot, which partner ids cannot contain: no
principal's prefix can cover another's groups (a partner called `route`, or `north` beside
`north-csc`, gains nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bus.policy.data import Partnership
from bus.topics import (
    AUDIT,
    AUDIT_HEADS,
    DELIVER_PREFIX,
    DLQ,
    EVENTS,
    INGRESS_PREFIX,
    REPLAY,
    deliver_topic,
    ingress_topic,
)
from schemas.envelope import Agency

ADMIN = "admin"
STAGE_PRINCIPALS = {"ingest": "sgbus-ingest", "route": "sgbus-route", "audit": "sgbus-audit",
                    "concern": "sgbus-concern", "all": "sgbus-worker"}
GATEWAY = "sgbus-gateway"
REPLAYER = "sgbus-replay"
Role = Literal["admin", "stage", "publisher", "partner", "delivery", "gateway", "operator"]
ResourceType = Literal["topic", "group", "transactional_id", "cluster"]
Operation = Literal["read", "write", "describe", "idempotent_write", "create"]
CLUSTER = "kafka-cluster"  # the one name Kafka gives the cluster resource
Pattern = Literal["literal", "prefixed"]


@dataclass(frozen=True, order=True)
class Grant:
    """ALLOW `operation` on a resource (READ and WRITE imply DESCRIBE in Kafka)."""

    resource: ResourceType
    name: str
    pattern: Pattern
    operation: Operation


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    grants: frozenset[Grant]
    partner_id: str | None = None

    @property
    def kafka(self) -> str:
        return f"User:{self.name}"


def stage_group_prefix(stage: str) -> str:
    """Consumer groups and transactional ids of a stage's workers start with this."""
    return ("worker" if stage == "all" else stage) + "."


def stage_app_id(app_id: str, stage: str) -> str:
    """The Faust app id (= consumer group) of a worker running `stage` under `app_id`."""
    return stage_group_prefix(stage) + app_id


GATEWAY_GROUP_PREFIX = "gateway."
REPLAY_GROUP_PREFIX = "replay."


def partner_group_prefix(partner_id: str) -> str:
    return f"partner.{partner_id}."


def delivery_group_prefix(partner_id: str) -> str:
    return f"delivery.{partner_id}."


def delivery_group(partner_id: str, sink: str) -> str:
    return delivery_group_prefix(partner_id) + sink


def publisher_name(partner_id: str) -> str:
    return f"publisher.{partner_id}"


def partner_name(partner_id: str) -> str:
    return f"partner.{partner_id}"


def delivery_name(partner_id: str) -> str:
    return f"delivery.{partner_id}"


def _topic(name: str, op: Operation, pattern: Pattern = "literal") -> Grant:
    return Grant("topic", name, pattern, op)


def _own_groups(prefix: str, transactional: bool) -> set[Grant]:
    grants = {Grant("group", prefix, "prefixed", "read")}
    if transactional:
        grants.add(Grant("transactional_id", prefix, "prefixed", "write"))
    return grants


_STAGE_TOPICS: dict[str, set[Grant]] = {
    "ingest": {_topic(INGRESS_PREFIX, "read", "prefixed"), _topic(EVENTS, "write"), _topic(DLQ, "write")},
    "route": {_topic(EVENTS, "read"), _topic(REPLAY, "read"), _topic(DELIVER_PREFIX, "write", "prefixed"),
              _topic(AUDIT, "write"), _topic(DLQ, "write")},
    # It reads the heads it published at start (SGBUS_AUDIT_ANCHOR=published).
    "audit": {_topic(AUDIT, "read"), _topic(AUDIT_HEADS, "write"), _topic(AUDIT_HEADS, "read")},
    # The concern stage reads every event and publishes what it raises like any source would.
    "concern": {_topic(EVENTS, "read"), _topic(ingress_topic(Agency.BUS), "write")},
}
_STAGE_TOPICS["all"] = set().union(*(_STAGE_TOPICS[s] for s in ("ingest", "route", "audit")))


def principals(partnership: Partnership) -> list[Principal]:
    """Every principal of the partnership with its grants, in a stable order."""
    out = [Principal(ADMIN, "admin", frozenset())]
    for stage, name in STAGE_PRINCIPALS.items():
        grants = _STAGE_TOPICS[stage] | _own_groups(stage_group_prefix(stage), transactional=True)
        if stage == "concern":
            # The concern table's changelog (`<app id>-concern-changelog`), created by the stage itself.
            grants |= {_topic(stage_group_prefix(stage), op, "prefixed") for op in ("read", "write", "create")}
        if not any(g.operation == "write" and g.resource == "topic" for g in grants):
            # Faust's producer is idempotent; a producer id needs WRITE on some topic or this
            # (kept for a stage that writes no topic).
            grants.add(Grant("cluster", CLUSTER, "literal", "idempotent_write"))
        out.append(Principal(name, "stage", frozenset(grants)))
    # Each partner agency's ingress topic by name: a prefix would cover sg.ingress.bus too, which
    # only the concern stage writes.
    out.append(Principal(GATEWAY, "gateway", frozenset({
        *(_topic(ingress_topic(a), "write") for a in Agency if a != Agency.BUS),
        _topic(DELIVER_PREFIX, "read", "prefixed"), _topic(DLQ, "read"),
        *_own_groups(GATEWAY_GROUP_PREFIX, transactional=False)})))
    out.append(Principal(REPLAYER, "operator", frozenset({
        _topic(DLQ, "read"), _topic(EVENTS, "describe"), _topic(REPLAY, "read"), _topic(REPLAY, "write"),
        *_own_groups(REPLAY_GROUP_PREFIX, transactional=False)})))
    for p in partnership.partners:
        # The bus's own source (agency bus) publishes only through the concern stage's principal:
        # no publisher principal exists that could write forged concerns.
        if p.agency != Agency.BUS:
            out.append(Principal(publisher_name(p.id), "publisher",
                                 frozenset({_topic(ingress_topic(p.agency), "write")}), p.id))
        out.append(Principal(partner_name(p.id), "partner",
                             frozenset({_topic(deliver_topic(p.id), "read"), _topic(AUDIT_HEADS, "read"),
                                        *_own_groups(partner_group_prefix(p.id), transactional=False)}), p.id))
        out.append(Principal(delivery_name(p.id), "delivery",
                             frozenset({_topic(deliver_topic(p.id), "read"), _topic(DLQ, "write"),
                                        Grant("group", delivery_group_prefix(p.id), "prefixed", "read")}), p.id))
    return out


def publisher_for_org(partnership: Partnership, org_id: str) -> str | None:
    """The publisher principal of the organisation with this `source.org_id`."""
    for p in partnership.partners:
        if p.org_id == org_id:
            return publisher_name(p.id)
    return None
