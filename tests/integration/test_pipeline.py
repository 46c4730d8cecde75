"""The whole pipe against the real Kafka broker and OPA server the session started."""

from __future__ import annotations

import json
import uuid

from bus.topics import DLQ, EVENTS, deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus

PARTNERS = ["northshire-police", "northshire-csc", "southshire-csc", "northshire-nhs-uec",
            "oakfield-primary", "riverside-academy"]


def _delivered(bus: Bus, partner: str, event_id: str) -> list[dict[str, object]]:
    return [r for r in bus.records(deliver_topic(partner)) if r["event_id"] == event_id]


def test_allowed_share_reaches_entitled_partners_and_others_receive_nothing(bus: Bus) -> None:
    s = Synth(seed=21)
    event = s.domestic_abuse_incident(s.child(), school_urn="900001")
    bus.publish([event])
    audits = bus.audits_for({event["event_id"]}, 4)
    by_recipient = {a["recipient"]: a["decision"] for a in audits}
    assert by_recipient == {"oakfield-primary": "allow", "northshire-csc": "allow",
                            "riverside-academy": "deny", "southshire-csc": "deny"}
    assert len(_delivered(bus, "oakfield-primary", event["event_id"])) == 1
    assert len(_delivered(bus, "northshire-csc", event["event_id"])) == 1
    assert _delivered(bus, "riverside-academy", event["event_id"]) == []
    assert _delivered(bus, "southshire-csc", event["event_id"]) == []
    school_copy = _delivered(bus, "oakfield-primary", event["event_id"])[0]
    assert school_copy["sharing"]["agreement"] == "DSA-OE-001"  # type: ignore[index]
    assert "circumstances" not in school_copy["payload"]  # type: ignore[operator]


def test_denied_share_is_audited_with_reason(bus: Bus) -> None:
    s = Synth(seed=22)
    event = s.domestic_abuse_incident(s.child(), school_urn="900001")
    bus.publish([event])
    audits = {a["recipient"]: a for a in bus.audits_for({event["event_id"]}, 4)}
    southshire = audits["southshire-csc"]
    assert southshire["decision"] == "deny"
    assert southshire["reasons"] == [
        "no agreement covers police.domestic_abuse_incident.v1 from police/NSP to southshire-csc"
    ]
    assert southshire["policy_revision"].startswith("sha256:")
    assert audits["riverside-academy"]["reasons"] == [
        "DSA-OE-001: condition not met: recipient is the organisation named in school_urn"
    ]
    assert audits["riverside-academy"]["fields_shared"] == []


def test_no_raw_nhs_number_in_events_or_deliveries_unless_revealed(bus: Bus) -> None:
    s = Synth(seed=23)
    child = s.child()
    nhs = child["identifiers"]["nhs_number"]
    events = [s.domestic_abuse_incident(child), s.child_protection_plan(child), s.unscheduled_care_attendance(child)]
    # Planted in free text too: redaction at ingest must catch them.
    events[0]["payload"]["circumstances"] = f"{child['given_name']} {child['family_name']} NHS {nhs} was present."
    bus.publish(events)
    ids = {e["event_id"] for e in events}
    audits = bus.audits_for(ids, 1 + 4 + 2)
    reveal_to = {a["recipient"] for a in audits
                 if a["decision"] == "allow" and a["identifier_modes"].get("nhs_number") == "reveal"}
    assert reveal_to == {"northshire-nhs-uec"}  # CP-IS: the NHS needs the NHS number
    events_topic = b"\n".join(bus.raw_values(EVENTS))
    assert nhs.encode() not in events_topic
    assert child["family_name"].encode() not in events_topic
    csc_copy = next(json.loads(v) for v in bus.raw_values(deliver_topic("northshire-csc"))
                    if json.loads(v)["event_id"] == events[0]["event_id"])
    # The MASH's agreement reveals the narrative: the original, as the police wrote it.
    assert csc_copy["payload"]["circumstances"] == events[0]["payload"]["circumstances"]
    assert csc_copy["subject"]["identifiers"]["nhs_number"] != nhs  # the identifier itself stays a token
    for partner in PARTNERS:
        ours = [json.loads(v) for v in bus.raw_values(deliver_topic(partner)) if json.loads(v)["event_id"] in ids]
        if partner in reveal_to:
            assert ours and all(nhs in json.dumps(v) for v in ours)
        else:
            for v in ours:
                narrative = v["payload"].pop("circumstances", None) if partner == "northshire-csc" else None
                assert nhs not in json.dumps(v), partner
                assert narrative is None or v["event_id"] == events[0]["event_id"]


def test_invalid_event_lands_in_dlq_with_field_named_and_worker_keeps_going(bus: Bus) -> None:
    s = Synth(seed=24)
    bad = s.domestic_abuse_incident(s.child())
    bad["subject"]["identifiers"]["nhs_number"] = "9434765918"
    bus.publish_raw("police", bad["event_id"].encode(), json.dumps(bad).encode())
    bus.publish_raw("police", b"junk", b"\xff\xfe not json")
    dead = wait_for(lambda: [r for r in bus.records(DLQ) if r.get("event_id") == bad["event_id"]],
                    60, what="dead letter")
    assert dead[0]["reasons"][0]["field"] == "subject.identifiers.nhs_number"
    assert dead[0]["stage"] == "ingest"
    assert b"9434765918" not in b"".join(bus.raw_values(DLQ))
    good = s.child_protection_plan(s.child())
    bus.publish([good])
    bus.audits_for({good["event_id"]}, 1)
    assert len(_delivered(bus, "northshire-nhs-uec", good["event_id"])) == 1


def test_metrics_count_deliveries_and_decisions(bus: Bus) -> None:
    before = bus.metric("sgbus_deliveries_total")
    s = Synth(seed=25)
    event = s.child_protection_plan(s.child())
    bus.publish([event])
    bus.audits_for({event["event_id"]}, 1)
    wait_for(lambda: bus.metric("sgbus_deliveries_total") >= before + 1, 30, what="deliveries metric")
    assert bus.metric("sgbus_policy_decisions_total") >= 1
    assert bus.metric("sgbus_opa_up") == 1.0


def test_opa_down_shares_nothing_loses_nothing_and_delivers_each_once_when_back(bus: Bus) -> None:
    s = Synth(seed=26)
    retries_before = bus.metric("sgbus_policy_retries_total")
    bus.stack.stop_opa()
    try:
        events = [s.domestic_abuse_incident(s.child(), school_urn="900002") for _ in range(3)]
        for e in events:
            e["event_id"] = str(uuid.uuid4())
        ids = {e["event_id"] for e in events}
        bus.publish(events)
        wait_for(lambda: bus.metric("sgbus_opa_up") == 0.0, 60, what="opa_up == 0")
        wait_for(lambda: bus.metric("sgbus_policy_retries_total") >= retries_before + 3, 60,
                 what="the held batch to be retried")
        assert [a for a in bus.audit_records() if a["event_id"] in ids] == []
        for partner in PARTNERS:
            assert [v for v in bus.records(deliver_topic(partner)) if v["event_id"] in ids] == []
    finally:
        bus.stack.start_opa()
    audits = bus.audits_for(ids, 3 * 4)
    assert len(audits) == 12
    wait_for(lambda: bus.metric("sgbus_opa_up") == 1.0, 30, what="opa_up == 1")
    for partner, expected in [("riverside-academy", 1), ("northshire-csc", 1), ("oakfield-primary", 0),
                              ("southshire-csc", 0)]:
        for event_id in ids:
            assert len(_delivered(bus, partner, event_id)) == expected, (partner, event_id)


def test_a_childs_records_land_on_the_partition_javas_partitioner_gives_their_key(bus: Bus) -> None:
    """The worker's producer hashes keys as Java's and aiokafka's do (murmur2), so a child's events
    and copies keep their partitions whichever producer wrote them (all-in-one or stage workers,
    before or after an upgrade): the concern stage's picture of a child and a partner's ordering
    rely on it."""
    from aiokafka.partitioner import murmur2

    from bus.kafka_io import read_keyed

    s = Synth(seed=31)
    events = [s.domestic_abuse_incident(s.child(), school_urn="900001") for _ in range(6)]
    ids = {e["event_id"] for e in events}
    bus.publish(events)
    bus.audits_for(ids, 4 * len(events))
    for topic in (EVENTS, deliver_topic("northshire-csc")):
        count, everything = read_keyed(bus.admin, topic, timeout_s=30)
        records = [(p, k or b"") for p, k, v in everything if json.loads(v).get("event_id") in ids]
        assert len(records) == len(events) and count > 1, topic
        for partition, key in records:
            assert partition == (murmur2(key) & 0x7FFFFFFF) % count, topic
