"""Exactly-once, tried where it can break: the broker refuses one record of a stage's batch for
good (here a partner topic whose `max.message.bytes` an operator set below a copy's size).
aiokafka fails only that record's future, not the transaction, so the route stage must check its
sends before it commits: it stops uncommitted, and once the cause is gone the restarted stage
delivers the copy, once. (Named zz: it stops the session's worker.)"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import admin as kafka_admin

from bus.agents.pipeline import EXACTLY_ONCE_STAGES
from bus.demo import start_worker, stop_worker
from bus.topics import deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus
from tests.integration.crash_sample import stored_pairs
from tests.integration.test_zz_crash_exactly_once import fresh_stages

PARTNER = "oakfield-primary"  # told of a domestic abuse incident by its school URN (DSA-OE-001)


def _max_message_bytes(admin: kafka_admin.AdminClient, topic: str, value: str | None) -> None:
    """Set the topic's `max.message.bytes` (None: back to the broker's default)."""
    op = (kafka_admin.AlterConfigOpType.SET if value is not None else kafka_admin.AlterConfigOpType.DELETE)
    entry = kafka_admin.ConfigEntry("max.message.bytes", value or "", incremental_operation=op)
    resource = kafka_admin.ConfigResource(kafka_admin.ResourceType.TOPIC, topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)


def test_a_stage_whose_send_is_refused_stops_uncommitted_and_its_restart_delivers_the_copy_once(
        bus: Bus, tmp_path: Path) -> None:
    s = Synth(seed=uuid.uuid4().int % 2**31)
    event = s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")
    topic = deliver_topic(PARTNER)
    env, db = fresh_stages(bus, tmp_path, "send-refused")
    admin = kafka_admin.AdminClient(bus.admin.librdkafka())
    _max_message_bytes(admin, topic, "200")  # a copy is ~1-2 KB: refused, for good
    procs = [start_worker(bus.settings, tmp_path / f"{stage}.log", env=env, stage=stage)
             for stage in EXACTLY_ONCE_STAGES]
    try:
        route = procs[EXACTLY_ONCE_STAGES.index("route")]
        bus.publish([event])
        wait_for(lambda: route.poll() is not None, 180, interval_s=0.5, what="the route stage to stop on the refusal")
        assert route.returncode != 0  # stopped as failed, for its supervisor to restart
        log = (tmp_path / "route.log").read_text()
        assert "send_failed_not_committing" in log and topic in log
        # Nothing of the batch was committed: no decision reached the audit stage, no copy the partner.
        assert not stored_pairs(db, {event["event_id"]})
        assert event["event_id"] not in {json.loads(v)["event_id"] for v in bus.raw_values(topic)}

        _max_message_bytes(admin, topic, None)  # the cause gone
        procs[EXACTLY_ONCE_STAGES.index("route")] = start_worker(bus.settings, tmp_path / "route.log", env=env,
                                                                 stage="route")
        wait_for(lambda: (PARTNER, "allow") in {(r, d) for _e, r, d in stored_pairs(db, {event["event_id"]})}, 180,
                 interval_s=0.5, what="the partner's decision after the restart")
        on_topic = Counter(e for e in (json.loads(v)["event_id"] for v in bus.raw_values(topic))
                           if e == event["event_id"])
        assert on_topic == Counter({event["event_id"]: 1})  # delivered, once
    finally:
        _max_message_bytes(admin, topic, None)
        for p in procs:
            stop_worker(p)
        bus.start_worker()
