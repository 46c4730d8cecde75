"""At-least-once, tried where it can break: the broker refuses one of the worker's sends for
good (here an operator's DENY on one partner's topic). The worker must not commit past it: it
stops, says why, and once the cause is gone the restarted worker delivers what was refused."""

from __future__ import annotations

import json

from confluent_kafka import admin as kafka_admin

from bus.security.principals import STAGE_PRINCIPALS
from bus.topics import deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus

PARTNER = "oakfield-primary"  # told of a domestic abuse incident by its school URN (DSA-OE-001)


def _deny(topic: str) -> kafka_admin.AclBinding:
    return kafka_admin.AclBinding(
        kafka_admin.ResourceType.TOPIC, topic, kafka_admin.ResourcePatternType.LITERAL,
        f"User:{STAGE_PRINCIPALS['all']}", "*", kafka_admin.AclOperation.WRITE, kafka_admin.AclPermissionType.DENY)


def test_a_refused_send_is_never_committed_past_and_is_delivered_after_the_restart(bus: Bus) -> None:
    assert bus.worker is not None
    topic = deliver_topic(PARTNER)
    admin = kafka_admin.AdminClient(bus.admin.librdkafka())
    deny = _deny(topic)
    for fut in admin.create_acls([deny]).values():
        fut.result(30)
    s = Synth(seed=4242)
    event = s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")
    try:
        bus.publish([event])
        code = bus.worker.wait(120)  # the worker stops at its next commit rather than commit past the send
        log = bus.worker_log.read_text()
        assert "send_failed_not_committing" in log and topic in log
        assert code != 0
        assert event["event_id"] not in {json.loads(v)["event_id"] for v in bus.raw_values(topic)}
    finally:
        for fut in admin.delete_acls([kafka_admin.AclBindingFilter(
                deny.restype, deny.name, deny.resource_pattern_type, deny.principal, deny.host, deny.operation,
                deny.permission_type)]).values():
            fut.result(30)
        if bus.worker.poll() is not None:
            bus.start_worker()  # the session's worker, for the tests after this one
    wait_for(lambda: event["event_id"] in {json.loads(v)["event_id"] for v in bus.raw_values(topic)}, 120,
             interval_s=1.0, what="the refused delivery, after the restart")
