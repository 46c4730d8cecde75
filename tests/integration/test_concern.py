"""The whole picture of a child on the real stack: the concern table, its thresholds in Rego, the
concern delivered to the MASH only, its changelog surviving a restart, a threshold changed live."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bus.concern.agent import changelog_topic_name
from bus.kafka_io import read_topic
from bus.pseudonymise.keyring import load_keyring
from bus.pseudonymise.operators.token import token
from bus.security.principals import stage_app_id
from bus.topics import deliver_topic, ingress_topic
from schemas.envelope import Agency
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import REPO, Bus

CONCERN = "bus.multi_agency_concern.v1"
MASH = "northshire-csc"


def mash_token(bus: Bus, child: dict[str, Any]) -> str:
    return token(load_keyring(bus.settings.keyring_path), "mash", "nhs_number", child["identifiers"]["nhs_number"])


def concerns_for(bus: Bus, partner: str, key: str) -> list[dict[str, Any]]:
    return [r for r in bus.records(deliver_topic(partner))
            if r["event_type"] == CONCERN and key in r["subject"]["identifiers"].values()]


def picture(bus: Bus, key: str) -> dict[str, Any] | None:
    """The child's latest picture on the table's changelog (what a restarted worker recovers);
    None if there is none, {} if it was deleted."""
    changelog = changelog_topic_name(stage_app_id(bus.settings.app_id, "concern"))
    latest = None
    c = Consumer(bus.admin.librdkafka(**{"group.id": "sgbus-reader-concern", "enable.auto.commit": False,
                                        "enable.partition.eof": True, "log_level": 0}))
    try:
        parts = list(c.list_topics(changelog, timeout=10).topics[changelog].partitions)
        c.assign([TopicPartition(changelog, p, OFFSET_BEGINNING) for p in parts])
        done: set[int] = set()
        while len(done) < len(parts):
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            if msg.key() and json.loads(msg.key()) == key:  # Faust's json codec: a JSON string
                # A tombstone (the picture let go: nothing left in its window) reads as {}.
                latest = json.loads(json.loads(msg.value())) if msg.value() is not None else {}
    finally:
        c.close()
    return latest


def history(s: Synth, child: dict[str, Any], days_ago: float = 0) -> list[dict[str, Any]]:
    """Police, school and NHS each report about the child (three agencies)."""
    events = [s.domestic_abuse_incident(child, school_urn="900001"), s.attendance_concern(child, school_urn="900001"),
              s.unscheduled_care_attendance(child)]
    if days_ago:
        for e in events:
            at = datetime.fromisoformat(e["occurred_at"]) - timedelta(days=days_ago)
            e["occurred_at"], e["recorded_at"] = at.isoformat(), (at + timedelta(minutes=30)).isoformat()
    return events


def test_police_school_and_nhs_within_the_window_raise_one_concern_to_the_mash_and_none_to_a_school(
        bus: Bus) -> None:
    s = Synth(seed=2020)
    child = s.child(min_age=6)
    key = mash_token(bus, child)
    events = history(s, child)
    bus.publish(events)
    found = wait_for(lambda: concerns_for(bus, MASH, key), 120, what="the concern at the MASH")
    concern = found[0]
    payload = concern["payload"]
    assert payload["rule"] == "three-agencies-90d" and payload["raised"] == 1
    assert payload["agencies"] == ["nhs", "police", "school"] and payload["events_in_window"] == 3
    assert concern["sharing"]["agreement"] == "DSA-MAC-001"
    # Counts and dates only: no free text, no identifier but the MASH's own tokens.
    assert set(payload) == {"rule", "window_days", "agencies", "reports", "events_in_window", "first_at",
                            "last_at", "raised"}
    assert child["identifiers"]["nhs_number"] not in json.dumps(concern)
    assert all(v.startswith("psn:") for v in concern["subject"]["identifiers"].values())
    assert concern["subject"].get("given_name") is None
    # Audited like any event: the MASH's share and the denials to everyone else.
    audits = bus.audits_for({concern["event_id"]}, 1)
    assert {(a["recipient"], a["decision"]) for a in audits} == {(MASH, "allow")}
    # A fourth report of a kind already counted is not a material change: still one concern.
    bus.publish([s.attendance_concern(child, school_urn="900001")])
    wait_for(lambda: (p := picture(bus, key)) and len(p["reports"]) == 4, 90, what="the fourth report in the table")
    assert len(concerns_for(bus, MASH, key)) == 1
    assert not concerns_for(bus, "oakfield-primary", key) and not concerns_for(bus, "riverside-academy", key)


def test_a_history_spread_outside_the_window_raises_nothing(bus: Bus) -> None:
    s = Synth(seed=2021)
    child = s.child(min_age=6)
    key = mash_token(bus, child)
    old = history(s, child, days_ago=200)
    bus.publish(old)
    # Each report is older than the longest window: the table keeps no picture of the child.
    wait_for(lambda: picture(bus, key) is not None, 90, what="the child's picture")
    assert picture(bus, key) == {}
    raised = [json.loads(v) for v in read_topic(bus.admin, ingress_topic(Agency.BUS), timeout_s=3.0, to_end=True)]
    nhs = child["identifiers"]["nhs_number"]
    assert not [e for e in raised if e["subject"]["identifiers"].get("nhs_number") == nhs]
    assert not concerns_for(bus, MASH, key)


def test_a_concern_worker_restart_keeps_the_picture_and_a_new_agency_raises_again(bus: Bus) -> None:
    s = Synth(seed=2022)
    child = s.child(min_age=6)
    key = mash_token(bus, child)
    bus.publish(history(s, child))
    wait_for(lambda: concerns_for(bus, MASH, key), 120, what="the first concern")
    wait_for(lambda: (p := picture(bus, key)) and "three-agencies-90d" in p["raised"], 60, what="the raise recorded")
    bus.kill_concern_worker()  # SIGKILL: only the Kafka changelog can bring the picture back
    bus.start_concern_worker()
    # Social care is a fourth agency: material only if the three earlier reports survived.
    bus.publish([s.child_protection_plan(child)])
    second = wait_for(lambda: [c for c in concerns_for(bus, MASH, key) if c["payload"]["raised"] == 2], 180,
                      what="the second concern")
    assert second[0]["payload"]["agencies"] == ["nhs", "police", "school", "social_care"]
    assert second[0]["payload"]["events_in_window"] == 4


def test_a_threshold_changed_in_the_policy_data_applies_without_a_restart(bus: Bus, tmp_path: Path) -> None:
    proposed = tmp_path / "policies"
    shutil.copytree(REPO / "policies", proposed)
    concern_file = proposed / "data" / "concern.yaml"
    text = concern_file.read_text()
    lowered = text.replace("      min_agencies: 3", "      min_agencies: 2")
    assert lowered != text
    concern_file.write_text(lowered)
    bus.stack.reload_policies(proposed)
    try:
        s = Synth(seed=2023)
        child = s.child(min_age=6)
        key = mash_token(bus, child)
        bus.publish([s.domestic_abuse_incident(child, school_urn="900001"), s.unscheduled_care_attendance(child)])
        found = wait_for(lambda: concerns_for(bus, MASH, key), 120, what="a concern at two agencies")
        assert found[0]["payload"]["agencies"] == ["nhs", "police"]
    finally:
        bus.stack.reload_policies(REPO / "policies")


def test_chronology_shows_the_mash_the_childs_timeline_and_refuses_a_school(bus: Bus) -> None:
    s = Synth(seed=2024)
    child = s.child(min_age=6)
    key = mash_token(bus, child)
    bus.publish(history(s, child))
    wait_for(lambda: concerns_for(bus, MASH, key), 120, what="the concern")
    env = {"SGBUS_HOME": str(bus.settings.home), "SGBUS_POLICIES_DIR": str(REPO / "policies"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bus", "chronology", "--token", key, "--reason", "safeguarding",
                          "--json"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    types = [e["event_type"] for e in entries]
    # What the MASH was sent about the child (the police incident, the NHS attendance, the
    # concern), oldest first; free text stays out of the timeline.
    assert CONCERN in types and "police.domestic_abuse_incident.v1" in types
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    assert child["identifiers"]["nhs_number"] not in out.stdout
    assert "circumstances" not in out.stdout and "child_voice" not in out.stdout
    school = subprocess.run([sys.executable, "-m", "bus", "chronology", "--token", key, "--as", "oakfield-primary",
                             "--reason", "safeguarding"], capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    assert school.returncode == 2 and "MASH only" in school.stderr
    # The MASH's look-up is on record (the school's, refused, is not).
    looked = subprocess.run([sys.executable, "-m", "bus", "audit", "lookups", "--token", key, "--json"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert looked.returncode == 0, looked.stderr
    assert [(r["command"], r["asked_as"]) for r in map(json.loads, looked.stdout.splitlines())] == [
        ("chronology", MASH)]
