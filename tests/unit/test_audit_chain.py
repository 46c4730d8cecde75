"""The audit chain detects any altered, removed, inserted or reordered record."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.audit.chain import AuditStore, canonical, chain_hash, verify
from bus.audit.trail import render, subject_tokens, trail
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring
from bus.pseudonymise.operators import token
from bus.records import AUDIT_RECORDS_PER_MESSAGE, AuditRecord, decode_audit_batch, encode_audit_batches

KEYRING = Keyring.generate()
NHS = "9434765919"


def _record(recipient: str, allow: bool = True, event_id: uuid.UUID | None = None) -> AuditRecord:
    return AuditRecord(
        audit_id=uuid.uuid4(), event_id=event_id or uuid.uuid4(), event_type="police.domestic_abuse_incident.v1",
        source_org="NSP", source_agency="police", recipient=recipient, decision="allow" if allow else "deny",
        agreement="DSA-OE-002" if allow else None, lawful_basis=["Children Act 2004 s.11"] if allow else [],
        purpose="child-protection", fields_shared=["incident_at"] if allow else [],
        identifier_modes={"nhs_number": "token"} if allow else {},
        reasons=["DSA-OE-002 allows"] if allow else ["no agreement covers it"], policy_revision="sha256:abc",
        subject_token=token(KEYRING, CONTROLLER_DOMAIN, "nhs_number", NHS), decided_at=datetime.now(UTC),
    )


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore(tmp_path / "audit.db")
    for batch in range(4):
        s.append([_record(f"partner-{batch}-{i}", allow=i % 2 == 0) for i in range(5)], KEYRING)
    return s


def test_an_untouched_chain_verifies(store: AuditStore) -> None:
    result = verify(store, KEYRING)
    assert result.ok and result.records == 20 and result.checkpoints == 4


def test_an_altered_record_is_reported(store: AuditStore) -> None:
    body = json.loads(store._execute("SELECT body FROM audit WHERE seq = 7").fetchone()[0])
    body["decision"] = "allow"
    body["recipient"] = "someone-else"
    store._execute("UPDATE audit SET body = ? WHERE seq = 7", (canonical(body).decode(),))
    result = verify(store, KEYRING)
    assert not result.ok and result.first_bad_seq == 7 and "altered" in (result.problem or "")


def test_a_removed_record_is_reported(store: AuditStore) -> None:
    store._execute("DELETE FROM audit WHERE seq = 5")
    result = verify(store, KEYRING)
    assert not result.ok and result.first_bad_seq == 5 and "removed" in (result.problem or "")


def test_a_removed_and_renumbered_record_is_reported(store: AuditStore) -> None:
    store._execute("DELETE FROM audit WHERE seq = 5")
    store._execute("UPDATE audit SET seq = seq - 1 WHERE seq > 5")
    result = verify(store, KEYRING)
    assert not result.ok and result.first_bad_seq == 5


def test_an_inserted_record_is_reported(store: AuditStore) -> None:
    store._execute("UPDATE audit SET seq = seq + 1000 WHERE seq > 10")
    store._execute("UPDATE audit SET seq = seq - 999 WHERE seq > 1000")
    prev = store._execute("SELECT hash FROM audit WHERE seq = 10").fetchone()[0]
    forged = _record("forged-recipient").model_dump(mode="json")
    store._execute(
        "INSERT INTO audit VALUES (11, ?, ?, ?, ?, ?, ?, ?, ?)",
        (forged["audit_id"], forged["event_id"], forged["recipient"], forged["subject_token"],
         forged["decided_at"], canonical(forged).decode(), prev, chain_hash(prev, forged)),
    )
    result = verify(store, KEYRING)
    assert not result.ok and result.first_bad_seq == 12 and "removed, inserted or reordered" in (result.problem or "")


def test_reordered_records_are_reported(store: AuditStore) -> None:
    store._execute("UPDATE audit SET seq = -1 WHERE seq = 8")
    store._execute("UPDATE audit SET seq = 8 WHERE seq = 9")
    store._execute("UPDATE audit SET seq = 9 WHERE seq = -1")
    result = verify(store, KEYRING)
    assert not result.ok and result.first_bad_seq == 8


def test_a_truncated_tail_is_caught_by_the_signed_checkpoint(store: AuditStore) -> None:
    store._execute("DELETE FROM audit WHERE seq > 17")
    result = verify(store, KEYRING)
    assert not result.ok and "removed from the end" in (result.problem or "")


def test_a_forged_checkpoint_signature_is_reported(store: AuditStore) -> None:
    store._execute("UPDATE checkpoints SET signature = ? WHERE seq = 10", ("00" * 64,))
    result = verify(store, KEYRING)
    assert not result.ok and "bad signature" in (result.problem or "")


def test_a_repeated_decision_is_stored_once(tmp_path: Path) -> None:
    s = AuditStore(tmp_path / "audit.db")
    event_id = uuid.uuid4()
    assert s.append([_record("a", event_id=event_id)], KEYRING) == 1
    assert s.append([_record("a", event_id=event_id), _record("b", event_id=event_id)], KEYRING) == 1
    assert s.count() == 2 and verify(s, KEYRING).ok


def test_a_redelivered_batch_and_a_repeat_within_one_batch_are_stored_once(tmp_path: Path) -> None:
    s = AuditStore(tmp_path / "audit.db")
    first = [_record(f"p{i}") for i in range(5)]
    assert s.append(first, KEYRING) == 5
    again = _record("p9")
    assert s.append([*first, again, again.model_copy(update={"audit_id": uuid.uuid4()})], KEYRING) == 1
    assert s.count() == 6 and verify(s, KEYRING).ok


def test_audit_messages_round_trip_and_split_large_batches() -> None:
    records = [_record(f"p{i}") for i in range(AUDIT_RECORDS_PER_MESSAGE + 1)]
    messages = encode_audit_batches(records)
    assert len(messages) == 2
    assert messages[0][0] == str(records[0].event_id).encode()
    assert [r for _, v in messages for r in decode_audit_batch(v)] == records


def test_trail_finds_a_child_by_nhs_number_across_key_rotation(store: AuditStore) -> None:
    rotated = KEYRING.rotated()
    store.append([AuditRecord.model_validate({
        **_record("after-rotation").model_dump(), "subject_token": token(rotated, CONTROLLER_DOMAIN, "nhs_number", NHS),
    })], rotated)
    records = trail(store, subject_tokens(rotated, "nhs_number", NHS))
    assert len(records) == 21
    text = "\n".join(render(records))
    assert "SHARED under DSA-OE-002" in text and "DENIED" in text and "no agreement covers it" in text
    assert verify(store, rotated).ok
