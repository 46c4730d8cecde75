"""Issue 13 on the real stack: who sent an event, one content per event id, overrides only by
a registered role, an audit an insider cannot quietly rewrite, and keys ready before use."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bus.audit.heads import latest_head
from bus.kafka_io import idempotent_producer, produce_all
from bus.pseudonymise.engine import free_text_fields, pseudonymise_at_ingest
from bus.pseudonymise.keyring import Keyring, load_keyring, save_keyring
from bus.records import Provenance, ReplayRequest
from bus.replay_proofs import replay_proof
from bus.topics import DLQ, EVENTS, REPLAY, deliver_topic
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus


def _sgbus(bus: Bus, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SGBUS_HOME": str(bus.settings.home), "SGBUS_POLICIES_DIR": str(bus.settings.policies_dir),
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, env=full,
                          timeout=180, check=False)


def _dead_letters(bus: Bus, event_id: str, code: str) -> list[dict[str, Any]]:
    return wait_for(lambda: [d for d in bus.records(DLQ, timeout_s=1.5) if d.get("event_id") == event_id
                             and any(r.get("code") == code for r in d.get("reasons", []))] or None,
                    60, what=f"a {code} dead letter")


def _delivered(bus: Bus, partner: str, event_id: str) -> list[dict[str, Any]]:
    return [r for r in bus.records(deliver_topic(partner)) if r["event_id"] == event_id]


def test_unsigned_forged_and_misrouted_events_are_dead_lettered_with_a_reason_and_counted(bus: Bus) -> None:
    """Regressions: the envelope's signature was accepted and ignored, and a police event
    read from sg.ingress.school was accepted."""
    before = bus.metric("sgbus_events_rejected_total")
    s = Synth(seed=131)
    unsigned = s.domestic_abuse_incident(s.child(min_age=5))
    bus.publish([unsigned], sign=False)
    forged = bus.signers.sign(s.domestic_abuse_incident(s.child(min_age=5)))
    forged["payload"]["risk_grade"] = "standard" if forged["payload"]["risk_grade"] != "standard" else "high"
    bus.publish([forged])
    # A school's publisher may write sg.ingress.school only: a police event signed by the
    # police key, sent there, is refused on the topic check.
    misrouted = bus.signers.sign(s.domestic_abuse_incident(s.child(min_age=5)))
    produce_all(idempotent_producer(bus.publisher("school")),
                [("sg.ingress.school", b"k", json.dumps(misrouted).encode())])
    for event, code, field in ((unsigned, "unsigned", "signature"), (forged, "bad_signature", "signature"),
                               (misrouted, "source_topic_mismatch", "source.agency")):
        dl = _dead_letters(bus, event["event_id"], code)[0]
        assert dl["reasons"][0]["field"] == field
        assert event["subject"]["family_name"] not in json.dumps(dl)
    wait_for(lambda: bus.metric("sgbus_events_rejected_total") >= before + 3, 30, what="rejections counted")
    assert not any(a["event_id"] in {unsigned["event_id"], forged["event_id"], misrouted["event_id"]}
                   for a in bus.audit_records())


def test_a_reused_event_id_with_other_content_is_dead_lettered_and_a_replay_is_harmless(bus: Bus) -> None:
    """Regression: a second event reusing an event id reached children's social care with the
    first child's identity, and its audit record and delivery were silently skipped."""
    s = Synth(seed=132)
    first = bus.signers.sign(s.domestic_abuse_incident(s.child(min_age=5)))
    second = s.domestic_abuse_incident(s.child(min_age=5))
    second["event_id"] = first["event_id"]
    # One after the other: the first content *seen* under an id wins, and two children's events
    # usually land on different partitions, whose order ingest does not promise.
    bus.publish([first])
    audits = bus.audits_for({first["event_id"]}, 4)
    bus.publish([second])
    _dead_letters(bus, first["event_id"], "duplicate_event_id")
    assert len(audits) == 4  # the first event's four decisions, once each
    copies = wait_for(lambda: _delivered(bus, "northshire-csc", first["event_id"]) or None, 30, what="delivery")
    assert len(copies) == 1
    assert copies[0]["subject"]["identifiers"].get("la_child_id") == first["subject"]["identifiers"].get("la_child_id")
    replays = bus.metric("sgbus_events_replayed_total")
    bus.publish([first])  # the same signed event again (a publisher's retry): harmless, not routed twice
    wait_for(lambda: bus.metric("sgbus_events_replayed_total") >= replays + 1, 60, what="replay counted")
    assert len(_delivered(bus, "northshire-csc", first["event_id"])) == 1
    assert len([a for a in bus.audit_records() if a["event_id"] == first["event_id"]]) == 4


def test_an_override_needs_a_declaration_signed_by_a_registered_role(bus: Bus) -> None:
    """Regression: any event carrying `urgency` got every field and identifier."""
    bus.ensure_declarers()
    signers = bus.signers
    overrides = bus.metric("sgbus_policy_overrides_total")
    refused = bus.metric("sgbus_policy_overrides_refused_total")
    s = Synth(seed=133)
    urgency = {"urgent_risk_of_significant_harm": True, "declared_by_role": "duty inspector",
               "justification": "Threats to kill made in front of the child; weapon not recovered."}
    asserted = {**s.domestic_abuse_incident(s.child(min_age=5)), "urgency": urgency}
    declared = signers.declare({**s.domestic_abuse_incident(s.child(min_age=5)), "urgency": urgency},
                               "duty inspector")
    dsl = s.dsl_concern(s.child(min_age=5))  # to the police only under a condition this event fails
    dsl = signers.declare({**dsl, "urgency": {**urgency, "declared_by_role": "MASH manager"}}, "MASH manager")
    bus.publish([asserted, declared, dsl])

    self_asserted = {a["recipient"]: a for a in bus.audits_for({asserted["event_id"]}, 4)}
    assert not any(a["override"] for a in self_asserted.values())
    assert self_asserted["northshire-csc"]["identifier_modes"]["nhs_number"] == "token"
    wait_for(lambda: bus.metric("sgbus_policy_overrides_refused_total") >= refused + 1, 30, what="refusal counted")

    audits = {a["recipient"]: a for a in bus.audits_for({declared["event_id"]}, 4)}
    csc = audits["northshire-csc"]
    assert csc["override"] is True and csc["override_role"] == "duty inspector"
    assert csc["identifier_modes"]["nhs_number"] == "reveal"
    assert audits["southshire-csc"]["override"] is False  # another area
    copy = wait_for(lambda: _delivered(bus, "northshire-csc", declared["event_id"]) or None, 30, what="delivery")[0]
    assert copy["subject"]["identifiers"]["nhs_number"] == declared["subject"]["identifiers"]["nhs_number"]

    police = bus.audits_for({dsl["event_id"]}, 2)
    to_police = next(a for a in police if a["recipient"] == "northshire-police")
    assert to_police["override"] is True and to_police["agreement"] == "EMERGENCY-URSH"
    free_text = set(free_text_fields(dsl["event_type"]))
    assert free_text and not free_text & set(to_police["fields_shared"])
    view = wait_for(lambda: _delivered(bus, "northshire-police", dsl["event_id"]) or None, 30, what="delivery")[0]
    assert not free_text & set(view["payload"])  # the emergency section says free_text: drop
    wait_for(lambda: bus.metric("sgbus_policy_overrides_total") >= overrides + 2, 30, what="overrides counted")


def _quiet_copy(bus: Bus, dest: Path) -> dict[str, Any]:
    """A copy of the audit store once its head is the one published on sg.audit.heads."""
    def settled() -> dict[str, Any] | None:
        head = latest_head(bus.admin)
        src = sqlite3.connect(bus.settings.audit_db_path)
        try:
            row = src.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if head is None or row is None or (head.seq, head.hash) != (row[0], row[1]):
                return None
            dest.unlink(missing_ok=True)
            out = sqlite3.connect(dest)
            src.backup(out)
            out.close()
        finally:
            src.close()
        return {"seq": head.seq}
    return wait_for(settled, 60, what="the published head to catch up with the store")


def test_audit_verify_uses_the_public_key_and_the_published_head_to_catch_an_insider(
        bus: Bus, tmp_path: Path) -> None:
    """Regressions: `audit verify` passed after the last records and their checkpoints were
    deleted, after a record was rewritten, rehashed and the checkpoints dropped, and after a
    record's event_id or subject_token column was changed."""
    s = Synth(seed=134)
    event = s.domestic_abuse_incident(s.child(min_age=5))
    bus.publish([event])
    bus.audits_for({event["event_id"]}, 4)
    copy = tmp_path / "audit.db"
    head = _quiet_copy(bus, copy)
    # The auditor's kit: the public keys, read access to sg.audit.heads, the database copy.
    public = tmp_path / "public-keys.json"
    public.write_text((bus.settings.home / "audit-signing" / "public-keys.json").read_text())
    env = {"SGBUS_AUDIT_DB": str(copy)}
    ok = _sgbus(bus, "audit", "verify", "--public-keys", str(public), env=env)
    assert ok.returncode == 0 and f"matches the published head at record {head['seq']}" in ok.stdout, ok.stderr

    def tampered(sql: list[tuple[str, tuple[Any, ...]]]) -> subprocess.CompletedProcess[str]:
        work = tmp_path / f"t{uuid.uuid4().hex}.db"
        work.write_bytes(copy.read_bytes())
        db = sqlite3.connect(work)
        for statement, params in sql:
            db.execute(statement, params)
        db.commit()
        db.close()
        return _sgbus(bus, "audit", "verify", "--public-keys", str(public), env={"SGBUS_AUDIT_DB": str(work)})

    n = head["seq"]
    db = sqlite3.connect(copy)
    cut = db.execute("SELECT MAX(seq) FROM checkpoints WHERE seq < ?", (n,)).fetchone()[0]
    db.close()
    # The last batch and its checkpoint removed: what is left is a consistent, signed chain ...
    tail = tampered([("DELETE FROM audit WHERE seq > ?", (cut,)), ("DELETE FROM checkpoints WHERE seq > ?", (cut,))])
    assert tail.returncode == 1 and "records and checkpoints removed from the end" in tail.stderr
    column = tampered([("UPDATE audit SET subject_token = 'psn:k0:elsewhere' WHERE seq = ?", (n - 1,))])
    assert column.returncode == 1 and "column subject_token" in column.stderr
    event_id = tampered([("UPDATE audit SET event_id = ? WHERE seq = ?", (str(uuid.uuid4()), n - 2))])
    assert event_id.returncode == 1 and "column event_id" in event_id.stderr
    # the signing key is not in the keyring, and verification never needed it
    assert "audit" not in json.loads(bus.settings.keyring_path.read_text())
    assert "private_key" not in public.read_text()


def _produce_at(bus: Bus, topic: str, key: bytes, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> tuple[int, int]:
    """Produce one record as the admin; (partition, offset) where it was written."""
    placed: list[tuple[int, int]] = []
    producer = idempotent_producer(bus.admin)

    def done(err: object, msg: Any) -> None:
        if err is None:
            placed.append((msg.partition(), msg.offset()))

    producer.produce(topic, key=key, value=value, headers=headers, on_delivery=done)
    producer.flush(30)
    assert len(placed) == 1
    return placed[0]


def test_whoever_may_write_sg_replay_cannot_have_a_made_up_event_shared(bus: Bus) -> None:
    """Found in review: sg.replay carried whole events, routed as they stood, so the replay
    principal's password could have any event shared (an emergency override added, say). A
    whole event put there now is refused as malformed and shared with no one; a request naming
    a place that holds another event is refused too."""
    s = Synth(seed=137)
    raw = bus.signers.sign(s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001"))
    event = pseudonymise_at_ingest(parse_event_dict(raw), load_keyring(bus.settings.keyring_path),
                                   ingest_id=uuid.uuid4(),
                                   provenance=Provenance(kid="x", content_sha256="0", signature="x"))
    whole = _produce_at(bus, REPLAY, b"k", event.model_dump_json().encode())
    # (Every reader of sg.events in the suite finds an event id in each record, this one too.)
    elsewhere = _produce_at(bus, EVENTS, b"k", b'{"event_id": "not this event"}',
                            headers=[("sgbus-routed", b"ingest")])
    # (The test holds the keyring, so it can make the proof route would have given a failed view.)
    proof = replay_proof(load_keyring(bus.settings.keyring_path), str(event.ingest_id), "northshire-csc")
    named = ReplayRequest(ingest_id=event.ingest_id, events_partition=elsewhere[0], events_offset=elsewhere[1],
                          replay_for=["northshire-csc"], proofs={"northshire-csc": proof})
    mismatch = _produce_at(bus, REPLAY, b"k", named.model_dump_json().encode())
    # Without a proof the replay principal cannot make: no recipient is taken.
    unproven = _produce_at(bus, REPLAY, b"k", named.model_copy(update={"proofs": {}}).model_dump_json().encode())

    def refused() -> dict[tuple[int, int], str] | None:
        found = {(d["partition"], d["offset"]): d["reason"] for d in bus.records(DLQ, timeout_s=1.5)
                 if d.get("stage") == "route" and d.get("topic") == REPLAY}
        return found if {whole, mismatch, unproven} <= set(found) else None

    found = wait_for(refused, 60, what="all three refused as dead letters")
    assert found[whole] == "replay_malformed" and found[mismatch] == "replay_mismatch"
    assert found[unproven] == "replay_unproven"
    assert not _delivered(bus, "northshire-csc", raw["event_id"])
    assert not any(a["event_id"] == raw["event_id"] for a in bus.audit_records())


def test_a_share_whose_view_cannot_be_built_is_audited_as_view_failed_and_replayed(bus: Bus) -> None:
    """Regression: after `keys rotate`, a worker without the new key audited "allow" and the
    partner never got the event. Here an event sealed under a key the worker does not hold
    reaches the route stage; the key then arrives in the keyring and `sgbus replay --failed`
    delivers it."""
    foreign = Keyring.generate()
    s = Synth(seed=135)
    raw = bus.signers.sign(s.domestic_abuse_incident(s.child(min_age=5)))
    event = pseudonymise_at_ingest(parse_event_dict(raw), foreign, ingest_id=uuid.uuid4(),
                                   provenance=Provenance(kid="x", content_sha256="0", signature="x"))
    # On sg.events as if routed there already (marked, so that no route agent takes it from there),
    # then a request on sg.replay, which every route agent reads: route fetches the event itself.
    partition, offset = _produce_at(bus, EVENTS, event.subject_key.encode(), event.model_dump_json().encode(),
                                    headers=[("sgbus-routed", b"ingest")])
    mine = load_keyring(bus.settings.keyring_path)
    request = ReplayRequest(ingest_id=event.ingest_id, events_partition=partition, events_offset=offset,
                            replay_for=["northshire-csc", "oakfield-primary"],
                            proofs={r: replay_proof(mine, str(event.ingest_id), r)
                                    for r in ("northshire-csc", "oakfield-primary")})
    produce_all(idempotent_producer(bus.admin), [(REPLAY, b"k", request.model_dump_json().encode())])
    audits = {a["recipient"]: a for a in bus.audits_for({raw["event_id"]}, 2)}  # the request's two recipients
    assert audits["northshire-csc"]["decision"] == "view_failed"
    assert audits["oakfield-primary"]["decision"] in {"view_failed", "deny"}
    assert not _delivered(bus, "northshire-csc", raw["event_id"])
    # The dead letter says where the event is, topic and all, for the replay to find it.
    assert {d["events_topic"] for d in _dead_letters(bus, raw["event_id"], "view_failed")} == {REPLAY}

    def stored_as_failed() -> bool:
        db = sqlite3.connect(bus.settings.audit_db_path)
        try:
            return bool(db.execute("SELECT 1 FROM audit WHERE event_id = ? AND decision = 'view_failed'",
                                   (raw["event_id"],)).fetchone())
        finally:
            db.close()
    wait_for(stored_as_failed, 60, what="the view_failed record in the audit store")
    # The missing key arrives (as after a rotation reaching this host late): added, not swapped.
    mine = load_keyring(bus.settings.keyring_path)
    merged = Keyring(mine.token, type(mine.seal)(mine.seal.active, {**mine.seal.keys, **foreign.seal.keys}))
    save_keyring(merged, bus.settings.keyring_path)
    result = _sgbus(bus, "replay", "--failed")
    assert result.returncode == 0, result.stderr
    assert "replayed" in result.stdout
    copy = wait_for(lambda: _delivered(bus, "northshire-csc", raw["event_id"]) or None, 60, what="replayed delivery")
    assert len(copy) == 1
    final = [a for a in bus.audit_records() if a["event_id"] == raw["event_id"] and a["recipient"] == "northshire-csc"]
    assert {a["decision"] for a in final} == {"view_failed", "allow"}
    again = _sgbus(bus, "replay", "--failed")  # nothing left to do: never delivered twice
    assert again.returncode == 0 and "replayed 0 share(s)" in again.stdout
    # Only the recipients the requests named were ever decided about this event.
    assert {a["recipient"] for a in bus.audit_records() if a["event_id"] == raw["event_id"]} == {
        "northshire-csc", "oakfield-primary"}


def test_partner_topic_keys_are_each_partners_own_token_for_the_child(bus: Bus) -> None:
    """Regression: every partner topic was keyed by the controller-domain token, so partners
    in different linkage domains got the same key for the same child."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    s = Synth(seed=136)
    event = s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")
    bus.publish([event])
    bus.audits_for({event["event_id"]}, 4)

    def key_on(topic: str) -> bytes | None:
        """The Kafka key of this event's message on `topic` (read from the beginning)."""
        consumer = Consumer(bus.admin.librdkafka(**{"group.id": "sgbus-test-keys", "enable.auto.commit": False,
                                                    "isolation.level": "read_committed", "log_level": 3}))
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            for _ in range(30):
                for msg in consumer.consume(num_messages=1000, timeout=1.0):
                    if msg.error() is None and json.loads(msg.value() or b"{}").get("event_id") == event["event_id"]:
                        return msg.key()
            return None
        finally:
            consumer.close()

    controller = wait_for(lambda: key_on(EVENTS), 60, what="the event on sg.events")
    csc = wait_for(lambda: key_on(deliver_topic("northshire-csc")), 60, what="the MASH's delivery")
    school = wait_for(lambda: key_on(deliver_topic("oakfield-primary")), 60, what="the school's delivery")
    assert len({controller, csc, school}) == 3  # controller, mash and education domains: three keys
