"""Crash safety with one process per stage (`sgbus worker --stage ingest|route|audit`, Kafka
transactions): 10,000 events, every stage SIGKILLed mid-stream and restarted; each partner's
topic then holds exactly the entitled events, none twice, as read_committed consumers see it.
(Runs after test_zz_crash: it stops the session's all-in-one worker.)"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bus.agents.pipeline import EXACTLY_ONCE_STAGES
from bus.demo import start_worker, stop_worker
from bus.kafka_io import read_topic
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import stage_app_id
from bus.topics import AUDIT, EVENTS, REPLAY, deliver_topic, ingress_topic
from schemas.envelope import Agency
from tests.helpers import helper_children, ingest_children, wait_for
from tests.integration.conftest import Bus
from tests.integration.crash_sample import allowed_by_recipient, crash_sample, stored_pairs


def _start_from_the_end(access: KafkaAccess, group: str, topics: list[str]) -> None:
    """A new consumer group would start at the earliest offset and redo the whole session's
    traffic; commit the current ends so the stages see only this test's events."""
    c = Consumer(access.librdkafka(**{"group.id": group, "enable.auto.commit": False, "log_level": 3}))
    try:
        tps = []
        for topic in topics:
            for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
                _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                tps.append(TopicPartition(topic, p, high))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def stages_start_from_the_end(access: KafkaAccess, app_id: str) -> None:
    """New stage consumer groups of `app_id` would start at the earliest offsets and redo the
    whole session's traffic: commit the current ends, so the stages see only the test's events."""
    _start_from_the_end(access, stage_app_id(app_id, "ingest"), [ingress_topic(a) for a in Agency])
    _start_from_the_end(access, stage_app_id(app_id, "route"), [EVENTS, REPLAY])
    _start_from_the_end(access, stage_app_id(app_id, "audit"), [AUDIT])


def fresh_stages(bus: Bus, tmp_path: Path, name: str) -> tuple[dict[str, str], Path]:
    """Stop the session's worker (its consumer groups would take the same events); the environment
    of stage workers of a new app id that see only what is published from now on, and the audit
    store they share."""
    if bus.worker is not None:
        stop_worker(bus.worker)
    app_id = f"{name}-{uuid.uuid4().hex[:8]}"
    stages_start_from_the_end(bus.admin, app_id)
    db = tmp_path / "audit.db"
    return {"SGBUS_APP_ID": app_id, "SGBUS_AUDIT_DB": str(db), "SGBUS_METRICS_PORT": "0"}, db


def test_sigkill_of_every_stage_leaves_partner_topics_with_each_entitled_event_exactly_once(
    bus: Bus, tmp_path: Path,
) -> None:
    events, ids, expected_pairs = crash_sample(seed=2002)

    assert bus.worker is not None
    env, db = fresh_stages(bus, tmp_path, "crash-eos")
    # The ingest stage prepares its batches in a second process and the audit stage stores them
    # from one, as the benchmark runs them (the broker-loss test runs every stage in one process each).
    env |= {"SGBUS_RETRY_MAX_BACKOFF_S": "1.0", "SGBUS_INGEST_PROCESS": "true", "SGBUS_AUDIT_PROCESS": "true"}

    def start() -> list[subprocess.Popen[bytes]]:
        return [start_worker(bus.settings, tmp_path / f"{stage}.log", env=env, stage=stage)
                for stage in EXACTLY_ONCE_STAGES]

    procs = start()
    try:
        ingest = procs[EXACTLY_ONCE_STAGES.index("ingest")]
        wait_for(lambda: ingest_children(ingest.pid), 60, what="the ingest stage's own ingest process")
        audit = procs[EXACTLY_ONCE_STAGES.index("audit")]
        wait_for(lambda: helper_children(audit.pid, "sgbus-audit"), 60, what="the audit stage's audit process")
        bus.publish(events)
        wait_for(lambda: len(stored_pairs(db, ids)) >= len(expected_pairs) // 5, 300, interval_s=0.5,
                 what="a fifth of the decisions before the crash")
        for p in procs:  # no shutdown hooks, no commit, open transactions left behind
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(30)
        at_crash = len(stored_pairs(db, ids))
        assert at_crash < len(expected_pairs), "the crash came too late to test anything"
        procs = start()

        stored = wait_for(lambda: (p := stored_pairs(db, ids)) and len(p) >= len(expected_pairs) and p,
                          600, interval_s=1.0, what="every decision after the restart")
        pairs = Counter((e, r) for e, r, _ in stored)
        assert set(pairs) == expected_pairs and max(pairs.values()) == 1

        all_events = read_topic(bus.admin, EVENTS, timeout_s=10)
        ingested = Counter(e for e in (json.loads(v).get("event_id") for v in all_events) if e in ids)
        assert set(ingested) == ids and max(ingested.values()) == 1  # sg.events: each event once

        allowed = allowed_by_recipient(stored)
        assert allowed, "the sample should share something"
        for partner, expected in allowed.items():
            on_topic = Counter(e for e in (json.loads(v)["event_id"] for v in bus.raw_values(deliver_topic(partner)))
                               if e in ids)
            assert set(on_topic) == expected, partner  # nothing lost, nothing extra
            assert max(on_topic.values()) == 1, partner  # nothing twice
        _a_replay_request_is_fetched_and_routed_by_the_stage_route_worker(bus, ids, allowed)
    finally:
        for p in procs:
            stop_worker(p)


def _a_replay_request_is_fetched_and_routed_by_the_stage_route_worker(bus: Bus, ids: set[str],
                                                                        allowed: dict[str, set[str]]) -> None:
    """The exactly-once route stage (its own principal, in a transaction) takes a request on
    sg.replay, fetches the event from sg.events and routes it; a request naming another event's
    place is refused. (Made here as route and `sgbus replay --failed` would make them: the
    test holds the keyring.)"""
    from bus.kafka_io import idempotent_producer, produce_all, read_placed
    from bus.pseudonymise.keyring import load_keyring
    from bus.records import ReplayRequest
    from bus.replay_proofs import replay_proof
    from bus.topics import DLQ

    keyring = load_keyring(bus.settings.keyring_path)
    partner, shared = sorted(allowed.items())[0]
    placed = {json.loads(v).get("event_id"): (p, o, json.loads(v)["ingest_id"])
              for p, o, v in read_placed(bus.admin, EVENTS, timeout_s=30, whole=True)
              if json.loads(v).get("event_id") in ids}
    event_id = sorted(shared)[0]
    other_id = next(e for e in sorted(ids) if e != event_id)
    partition, offset, ingest_id = placed[event_id]
    proofs = {partner: replay_proof(keyring, ingest_id, partner)}
    good = ReplayRequest(ingest_id=uuid.UUID(ingest_id), events_partition=partition, events_offset=offset,
                         replay_for=[partner], proofs=proofs)
    wrong = good.model_copy(update={"events_partition": placed[other_id][0], "events_offset": placed[other_id][1]})
    produce_all(idempotent_producer(bus.admin), [(REPLAY, b"good", good.model_dump_json().encode())])
    wrong_at: list[tuple[int, int]] = []
    producer = idempotent_producer(bus.admin)
    producer.produce(REPLAY, key=b"wrong", value=wrong.model_dump_json().encode(),
                     on_delivery=lambda err, msg: wrong_at.append((msg.partition(), msg.offset())))
    producer.flush(30)
    wait_for(lambda: sum(1 for v in bus.raw_values(deliver_topic(partner)) if json.loads(v).get("event_id") == event_id)
             == 2, 120, what="the replayed copy (the test asked for it again)")
    wait_for(lambda: any(d.get("reason") == "replay_mismatch" and (d.get("partition"), d.get("offset")) in wrong_at
                         and d.get("topic") == REPLAY for d in bus.records(DLQ, timeout_s=1.5)),
             60, what="the mismatched request refused")
