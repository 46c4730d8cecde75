"""The audit chain detects any altered, removed, inserted or reordered record (the whole walk, and
the audit stage's short walk of what was appended since its last)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.audit.chain import (
    AuditStore,
    AuditStoreError,
    Checkpoint,
    IngestedCheck,
    Verification,
    _verify,
    canonical,
    chain_hash,
    verify,
)
from bus.audit.signer import (
    AuditSigner,
    AuditVerifier,
    load_signer,
    load_verifier,
    new_audit_signer,
    public_keys_path,
    signing_key_path,
)
from bus.audit.trail import render, subject_tokens, trail
from bus.audit.watch import AuditWatch
from bus.metrics import Metrics
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring
from bus.pseudonymise.operators import token
from bus.records import AUDIT_RECORDS_PER_MESSAGE, AuditRecord, decode_audit_batch, encode_audit_batches
from bus.settings import Settings

KEYRING = Keyring.generate()
NHS = "9434765919"


def _record(recipient: str, allow: bool = True, event_id: uuid.UUID | None = None,
            ingest_id: uuid.UUID | None = None) -> AuditRecord:
    return AuditRecord(
        audit_id=uuid.uuid4(), ingest_id=ingest_id or uuid.uuid4(), event_id=event_id or uuid.uuid4(),
        event_type="police.domestic_abuse_incident.v1",
        source_org="NSP", source_agency="police", recipient=recipient, decision="allow" if allow else "deny",
        agreement="DSA-OE-002" if allow else None, lawful_basis=["Children Act 2004 s.11"] if allow else [],
        purpose="child-protection", fields_shared=["incident_at"] if allow else [],
        identifier_modes={"nhs_number": "token"} if allow else {},
        reasons=["DSA-OE-002 allows"] if allow else ["no agreement covers it"], policy_revision="sha256:abc",
        subject_token=token(KEYRING, CONTROLLER_DOMAIN, "nhs_number", NHS), decided_at=datetime.now(UTC),
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    new_audit_signer(tmp_path)
    return tmp_path


@pytest.fixture
def signer(home: Path) -> AuditSigner:
    return load_signer(home)


@pytest.fixture
def public(home: Path) -> AuditVerifier:
    """The auditor's view: only the public keys file."""
    return load_verifier(public_keys_path(home))


@pytest.fixture
def store(tmp_path: Path, signer: AuditSigner) -> AuditStore:
    s = AuditStore(tmp_path / "audit.db")
    for batch in range(4):
        s.append([_record(f"partner-{batch}-{i}", allow=i % 2 == 0) for i in range(5)], signer)
    return s


def _published(store: AuditStore) -> Checkpoint:
    """What sg.audit.heads holds after the appends: the newest checkpoint."""
    return store.checkpoints()[-1]


def test_an_untouched_chain_verifies(store: AuditStore, public: AuditVerifier) -> None:
    result = verify(store, public)
    assert result.ok and result.records == 20 and result.checkpoints == 4
    assert verify(store, public, _published(store)).ok


def test_records_are_read_a_page_at_a_time_in_chain_order(store: AuditStore) -> None:
    paged = [r.seq for r in store.records(page=3)]
    assert paged == [r.seq for r in store.records()] == list(range(1, 21))


def test_a_record_stored_below_seq_one_is_still_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("UPDATE audit SET seq = 0 WHERE seq = 1")
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 1


def test_a_record_without_a_sequence_number_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("INSERT INTO audit SELECT NULL, 'x-' || audit_id, ingest_id, event_id, 'someone-else', decision,"
                   " subject_token, decided_at, body, prev_hash, hash FROM audit WHERE seq = 3")
    result = verify(store, public)
    assert not result.ok and "outside the chain" in (result.problem or "")


def test_an_altered_record_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    body = json.loads(store._execute("SELECT body FROM audit WHERE seq = 7").fetchone()[0])
    body["decision"] = "allow"
    body["recipient"] = "someone-else"
    store._execute("UPDATE audit SET body = ? WHERE seq = 7", (canonical(body).decode(),))
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 7 and "altered" in (result.problem or "")


def test_a_removed_record_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("DELETE FROM audit WHERE seq = 5")
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 5 and "removed" in (result.problem or "")


def test_a_removed_and_renumbered_record_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("DELETE FROM audit WHERE seq = 5")
    store._execute("UPDATE audit SET seq = seq - 1 WHERE seq > 5")
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 5


def test_an_inserted_record_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("UPDATE audit SET seq = seq + 1000 WHERE seq > 10")
    store._execute("UPDATE audit SET seq = seq - 999 WHERE seq > 1000")
    prev = store._execute("SELECT hash FROM audit WHERE seq = 10").fetchone()[0]
    forged = _record("forged-recipient").model_dump(mode="json")
    store._execute(
        "INSERT INTO audit VALUES (11, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (forged["audit_id"], forged["ingest_id"], forged["event_id"], forged["recipient"], forged["decision"],
         forged["subject_token"], forged["decided_at"], canonical(forged).decode(), prev, chain_hash(prev, forged)),
    )
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 12 and "removed, inserted or reordered" in (result.problem or "")


def test_reordered_records_are_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("UPDATE audit SET seq = -1 WHERE seq = 8")
    store._execute("UPDATE audit SET seq = 8 WHERE seq = 9")
    store._execute("UPDATE audit SET seq = 9 WHERE seq = -1")
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 8


def test_a_truncated_tail_is_caught_by_the_signed_checkpoint(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("DELETE FROM audit WHERE seq > 17")
    result = verify(store, public)
    assert not result.ok and "removed from the end" in (result.problem or "")


def test_a_forged_checkpoint_signature_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("UPDATE checkpoints SET signature = ? WHERE seq = 10", ("00" * 64,))
    result = verify(store, public)
    assert not result.ok and "bad signature" in (result.problem or "")


def test_a_repeated_decision_is_stored_once(tmp_path: Path, signer: AuditSigner, public: AuditVerifier) -> None:
    s = AuditStore(tmp_path / "audit.db")
    ingest_id = uuid.uuid4()
    assert s.append([_record("a", ingest_id=ingest_id)], signer)[0] == 1
    assert s.append([_record("a", ingest_id=ingest_id), _record("b", ingest_id=ingest_id)], signer)[0] == 1
    assert s.count() == 2 and verify(s, public).ok


def test_a_reused_event_id_is_not_skipped_as_a_repeat(tmp_path: Path, signer: AuditSigner) -> None:
    """Regression (issue 13): the dedupe was keyed by (event id, recipient), so a second event
    reusing an id silently lost its audit record. The bus's own ingest id is the key now."""
    s = AuditStore(tmp_path / "audit.db")
    event_id = uuid.uuid4()
    assert s.append([_record("a", event_id=event_id)], signer)[0] == 1
    assert s.append([_record("a", event_id=event_id)], signer)[0] == 1
    assert s.count() == 2


def test_a_redelivered_batch_and_a_repeat_within_one_batch_are_stored_once(
        tmp_path: Path, signer: AuditSigner, public: AuditVerifier) -> None:
    s = AuditStore(tmp_path / "audit.db")
    first = [_record(f"p{i}") for i in range(5)]
    assert s.append(first, signer)[0] == 5
    again = _record("p9")
    assert s.append([*first, again, again.model_copy(update={"audit_id": uuid.uuid4()})], signer)[0] == 1
    assert s.count() == 6 and verify(s, public).ok


def test_verification_needs_only_the_public_keys_and_the_keyring_holds_no_audit_key(home: Path) -> None:
    assert "private_key" not in public_keys_path(home).read_text()
    assert "audit" not in Keyring.generate().to_json()
    assert signing_key_path(home) != home / "keyring.json" and signing_key_path(home).is_file()


def test_a_tail_removed_with_its_checkpoints_fails_against_the_published_head(
        store: AuditStore, public: AuditVerifier) -> None:
    """Regression (issue 13): deleting the last records and their checkpoints passed."""
    published = _published(store)
    store._execute("DELETE FROM audit WHERE seq > 10")
    store._execute("DELETE FROM checkpoints WHERE seq > 10")
    assert verify(store, public).ok  # alone, the database cannot tell (README says so) ...
    result = verify(store, public, published)  # ... the head published outside it can
    assert not result.ok and "chain ends at 10" in (result.problem or "")


def _rewrite_and_rehash(store: AuditStore, seq_to_rewrite: int) -> None:
    """What an insider without the signing key can do: rewrite a record and recompute every
    hash after it, so the chain is consistent again (only signed heads contradict it)."""
    prev = "0" * 64
    for seq, raw in _rows(store):
        body = json.loads(raw)
        if seq == seq_to_rewrite:
            body["recipient"] = "someone-else"
        digest = chain_hash(prev, body)
        store._execute("UPDATE audit SET body = ?, recipient = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                       (canonical(body).decode(), body["recipient"], prev, digest, seq))
        prev = digest


def test_a_rewritten_and_rehashed_record_fails_against_the_published_head(
        store: AuditStore, public: AuditVerifier) -> None:
    """Regression (issue 13): rewrite a record, rehash the chain after it, drop the checkpoints."""
    published = _published(store)
    _rewrite_and_rehash(store, 7)
    store._execute("DELETE FROM checkpoints")
    offline = verify(store, public)  # a consistent rewrite: but signed records with no checkpoint left fail ...
    assert not offline.ok and "carry no signed checkpoint" in (offline.problem or "")
    result = verify(store, public, published)
    assert not result.ok and "differs from the published head" in (result.problem or "")


def test_a_removed_checkpoint_is_reported(store: AuditStore, public: AuditVerifier) -> None:
    store._execute("DELETE FROM checkpoints WHERE seq = 10")
    result = verify(store, public, _published(store))
    assert not result.ok and "checkpoints were removed" in (result.problem or "")


def test_a_head_not_signed_by_the_audit_key_is_refused(store: AuditStore, public: AuditVerifier) -> None:
    published = _published(store)
    forged = Checkpoint(published.seq, published.hash, published.prev_checkpoint, published.signed_at,
                        published.key_id, "00" * 64)
    result = verify(store, public, forged)
    assert not result.ok and "bad signature" in (result.problem or "")


# Fixed ids: pytest-xdist requires every worker to collect the same test ids.
@pytest.mark.parametrize("column,value", [
    ("event_id", "6f1c2a9e-0d4b-4c1e-9a57-3e2b8d0c4f11"), ("subject_token", "psn:k0:forged"),
    ("recipient", "someone-else"), ("decided_at", "2020-01-01T00:00:00"),
    ("ingest_id", "0a7d5e3b-92c4-4f8a-b1d6-5c9e2f4a7b20"), ("decision", "view_failed")])
def test_a_changed_query_column_is_reported(store: AuditStore, public: AuditVerifier, column: str, value: str) -> None:
    """Regression (issue 13): changing the stored event_id or subject_token beside the hashed
    body passed `audit verify` (and hid the share from the child's audit trail)."""
    store._execute(f"UPDATE audit SET {column} = ? WHERE seq = 4", (value,))  # noqa: S608 - test literal
    result = verify(store, public)
    assert not result.ok and result.first_bad_seq == 4 and f"column {column}" in (result.problem or "")


def test_the_first_content_under_an_event_id_wins(tmp_path: Path) -> None:
    s = AuditStore(tmp_path / "audit.db")
    first = s.register_ingested([IngestedCheck("e1", "aaa", "i1"), IngestedCheck("e1", "bbb", "i2")])
    assert first["e1"] == IngestedCheck("e1", "aaa", "i1")
    again = s.register_ingested([IngestedCheck("e1", "ccc", "i3"), IngestedCheck("e2", "ddd", "i4")])
    assert again["e1"].ingest_id == "i1" and again["e2"].ingest_id == "i4"


def test_a_large_batch_is_registered_in_order_across_statements(tmp_path: Path) -> None:
    """SQLite's register writes 200 rows a statement: a batch longer than that, with an id
    repeated across statements and ids already known, is answered as one row at a time would be."""
    s = AuditStore(tmp_path / "audit.db")
    s.register_ingested([IngestedCheck("old", "o", "i-old")])
    batch = [IngestedCheck(f"e{n}", f"c{n}", f"i{n}") for n in range(450)]
    batch[300] = IngestedCheck("e5", "other", "i-late")  # e5 again, in the second statement
    batch[420] = IngestedCheck("old", "new", "i-new")
    first = s.register_ingested(batch)
    assert len(first) == 449
    assert first["e5"] == IngestedCheck("e5", "c5", "i5")
    assert first["old"] == IngestedCheck("old", "o", "i-old")
    assert first["e449"] == IngestedCheck("e449", "c449", "i449")
    assert s._execute("SELECT COUNT(*) FROM ingested").fetchone()[0] == 449


def test_audit_messages_round_trip_and_split_large_batches() -> None:
    records = [_record(f"p{i}") for i in range(AUDIT_RECORDS_PER_MESSAGE + 1)]
    messages = encode_audit_batches(records)
    assert len(messages) == 2
    assert messages[0][0] == str(records[0].event_id).encode()
    assert [r for _, v in messages for r in decode_audit_batch(v)] == records


def test_trail_finds_a_child_by_nhs_number_across_key_rotation(
        store: AuditStore, public: AuditVerifier, signer: AuditSigner) -> None:
    rotated = KEYRING.rotated()
    store.append([AuditRecord.model_validate({
        **_record("after-rotation").model_dump(), "subject_token": token(rotated, CONTROLLER_DOMAIN, "nhs_number", NHS),
    })], signer)
    records = trail(store, subject_tokens(rotated, "nhs_number", NHS))
    assert len(records) == 21
    text = "\n".join(render(records))
    assert "SHARED under DSA-OE-002" in text and "DENIED" in text and "no agreement covers it" in text
    assert verify(store, public).ok


def test_records_forged_after_the_last_checkpoint_are_reported_and_never_signed_over(
        store: AuditStore, public: AuditVerifier, signer: AuditSigner) -> None:
    """An insider appends correctly hash-chained rows after the last checkpoint: verify says
    so, and the audit stage refuses to sign a checkpoint over them."""
    seq, prev = store.head()
    forged = _record("forged").model_dump(mode="json")
    store._execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq + 1, forged["audit_id"], forged["ingest_id"], forged["event_id"], forged["recipient"],
         forged["decision"], forged["subject_token"], forged["decided_at"], canonical(forged).decode(), prev,
         chain_hash(prev, forged)),
    )
    result = verify(store, public)
    assert not result.ok and "follow the last signed checkpoint" in (result.problem or "")
    with pytest.raises(AuditStoreError, match="past its last signed checkpoint"):
        store.append([_record("next")], signer)
    assert not verify(store, public).ok


def _second_connection(store: AuditStore) -> AuditStore:
    """Another connection to the same chain, as the audit stage's verification opens."""
    return AuditStore(store.path) if store.path is not None else AuditStore(dsn=store._dsn)


def test_verification_reads_one_snapshot_while_records_are_appended(
        store: AuditStore, signer: AuditSigner, public: AuditVerifier) -> None:
    """The audit stage verifies beside its appends, no longer holding them back for the whole
    walk: what it reads must still be one committed state of the chain, records and checkpoints
    alike, however many appends commit meanwhile."""
    reader = _second_connection(store)
    try:
        with reader.snapshot():
            assert reader.count() == 20  # the snapshot is taken at its first read
            store.append([_record(f"later-{i}") for i in range(3)], signer)  # committed meanwhile, signed
            inside = _verify(reader, public, None)
        after = verify(reader, public, _published(store))
    finally:
        reader.close()
    assert inside.ok and (inside.records, inside.checkpoints) == (20, 4)
    assert after.ok and (after.records, after.checkpoints) == (23, 5)


# -- the audit stage's short walk (verify `since` a walk that passed): it agrees with the whole
# walk on an untouched chain and catches what an insider can do after that walk; the whole walk,
# run less often, catches an old record altered in place.

def _append(store: AuditStore, signer: AuditSigner, batches: int, tag: str) -> None:
    for batch in range(batches):
        store.append([_record(f"{tag}-{batch}-{i}", allow=i % 2 == 0) for i in range(5)], signer)


@pytest.fixture
def walked(home: Path, signer: AuditSigner, public: AuditVerifier) -> tuple[AuditStore, Verification]:
    """Ten records in two checkpoints, walked whole; then ten more in two more checkpoints."""
    store = AuditStore(home / "audit.db")
    _append(store, signer, 2, "before")
    first = verify(store, public)
    assert first.ok and first.records == 10 and first.last_checkpoint == 10
    _append(store, signer, 2, "after")
    return store, first


def _rows(store: AuditStore) -> list[tuple[int, str]]:
    return [(int(s), str(b)) for s, b in store._execute("SELECT seq, body FROM audit ORDER BY seq").fetchall()]


def test_a_walk_since_a_passed_one_agrees_with_the_whole_walk(walked: tuple[AuditStore, Verification],
                                                             public: AuditVerifier) -> None:
    store, first = walked
    published = store.checkpoints()[-1]
    short, whole = verify(store, public, published, since=first), verify(store, public, published)
    assert short.ok and whole.ok
    assert (short.records, short.checkpoints, short.head, short.last_checkpoint) == \
        (whole.records, whole.checkpoints, whole.head, whole.last_checkpoint) == (20, 4, whole.head, 20)
    # ... and the head published before the last walk is checked as well.
    assert verify(store, public, store.checkpoints()[0], since=short).ok
    with pytest.raises(ValueError, match="passed"):
        verify(store, public, since=Verification(False, 1, 0, "x"))


def test_a_rewrite_that_recomputes_the_chain_is_caught_by_the_short_walk(
        walked: tuple[AuditStore, Verification], public: AuditVerifier) -> None:
    store, first = walked
    _rewrite_and_rehash(store, 3)
    result = verify(store, public, since=first)
    assert not result.ok and result.first_bad_seq == 10 and "rewritten" in (result.problem or "")


@pytest.mark.parametrize(("tamper", "problem"), [
    (["DELETE FROM audit WHERE seq > 8", "DELETE FROM checkpoints WHERE seq > 5"], "missing"),
    (["DELETE FROM audit WHERE seq = 14"], "missing"),
    (["DELETE FROM checkpoints WHERE seq = 5"], "checkpoints up to record 10 were removed"),
    (["DELETE FROM checkpoints WHERE seq = 15"], "checkpoints were removed"),
    (["UPDATE audit SET recipient = 'someone-else' WHERE seq = 12"], "column recipient"),
    (["UPDATE audit SET seq = -3 WHERE seq = 3"], "records before record 10 were removed or renumbered"),
    (["UPDATE audit SET seq = NULL WHERE seq = 3"], "records before record 10 were removed or renumbered"),
    (["UPDATE checkpoints SET seq = -5 WHERE seq = 5"], "checkpoints up to record 10 were removed"),
    (["INSERT INTO checkpoints SELECT 7, hash, prev_checkpoint, signed_at, key_id, signature FROM checkpoints"
      " WHERE seq = 5"], "checkpoints up to record 10 were removed, added"),
], ids=["tail cut back before the walk", "a record after it", "a checkpoint before it", "a checkpoint after it",
        "a query column after it", "a record before it renumbered", "a record before it unnumbered",
        "a checkpoint before it renumbered", "a checkpoint added before it"])
def test_what_an_insider_does_after_a_walk_is_caught_by_the_next_short_walk(
        walked: tuple[AuditStore, Verification], public: AuditVerifier, tamper: list[str], problem: str) -> None:
    store, first = walked
    for sql in tamper:
        store._execute(sql)
    result = verify(store, public, since=first)
    assert not result.ok and problem in (result.problem or "")


def test_records_added_outside_the_audit_stage_after_a_walk_are_caught(
        walked: tuple[AuditStore, Verification], public: AuditVerifier) -> None:
    store, first = walked
    last_seq, last_hash = store._execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    forged = json.loads(_rows(store)[-1][1]) | {"recipient": "someone-else", "audit_id": "forged"}
    store._execute("INSERT INTO audit SELECT ?, 'forged', ingest_id, event_id, 'someone-else', decision,"
                   " subject_token, decided_at, ?, ?, ? FROM audit WHERE seq = ?",
                   (last_seq + 1, canonical(forged).decode(), last_hash, chain_hash(last_hash, forged), last_seq))
    result = verify(store, public, since=first)
    assert not result.ok and "added outside the audit stage" in (result.problem or "")


def test_old_rows_altered_or_replaced_in_place_are_caught_by_the_whole_walk_only(
        walked: tuple[AuditStore, Verification], public: AuditVerifier) -> None:
    """The limit the audit stage's daily whole walk is for (README "What the audit stage verifies")."""
    store, first = walked
    original = _rows(store)[6][1]
    body = json.loads(original) | {"purpose": "not what was decided"}
    store._execute("UPDATE audit SET body = ? WHERE seq = 7", (canonical(body).decode(),))
    assert verify(store, public, since=first).ok
    whole = verify(store, public)
    assert not whole.ok and whole.first_bad_seq == 7
    store._execute("UPDATE audit SET body = ? WHERE seq = 7", (original,))  # put back
    assert verify(store, public).ok
    # A checkpoint removed and another put in its place (a copy at another record) likewise.
    store._execute("INSERT INTO checkpoints SELECT 7, hash, prev_checkpoint, signed_at, key_id, signature"
                   " FROM checkpoints WHERE seq = 5")
    store._execute("DELETE FROM checkpoints WHERE seq = 5")
    assert verify(store, public, since=first).ok
    assert not verify(store, public).ok


def test_whole_walks_further_apart_than_a_week_are_refused(home: Path) -> None:
    """Only a whole walk catches an old row altered in place: a month between two would leave an
    insider that long to put it back unseen."""
    from pydantic import ValidationError

    assert Settings(home=home, audit_full_verify_interval_s=7 * 86400).audit_full_verify_interval_s == 7 * 86400
    with pytest.raises(ValidationError, match="audit_full_verify_interval_s"):
        Settings(home=home, audit_full_verify_interval_s=30 * 86400)


def test_the_audit_stage_walks_the_whole_chain_first_then_what_was_appended_then_whole_again(
        home: Path, signer: AuditSigner, walked: tuple[AuditStore, Verification]) -> None:
    store, _ = walked
    settings = Settings(home=home, audit_db=home / "audit.db", audit_full_verify_interval_s=3600)
    metrics = Metrics()
    watch = AuditWatch(settings, metrics)
    first = watch.run()
    assert first is not None and first.ok and first.records == 20
    full_at = metrics.audit_chain_last_full_verified._value.get()
    assert full_at > 0
    # An old record altered in place: the short walks that follow do not see it ...
    body = json.loads(_rows(store)[2][1]) | {"purpose": "not what was decided"}
    store._execute("UPDATE audit SET body = ? WHERE seq = 3", (canonical(body).decode(),))
    _append(store, signer, 1, "later")
    second = watch.run()
    assert second is not None and second.ok and second.records == 25
    assert metrics.audit_chain_last_full_verified._value.get() == full_at  # not a whole walk
    # ... the whole walk, when due (an hour on), does, and the one after a failure is whole too.
    watch._whole_walk_at -= 3600
    third = watch.run()
    assert third is not None and not third.ok and third.first_bad_seq == 3
    assert metrics.audit_chain_verified._value.get() == 0 and watch.passed is None
    again = watch.run()
    assert again is not None and not again.ok and again.first_bad_seq == 3


def test_by_default_every_walk_of_the_audit_stage_is_whole(
        home: Path, walked: tuple[AuditStore, Verification]) -> None:
    """Only a whole walk catches an old row altered in place: shorter walks are the operator's choice."""
    store, _ = walked
    watch = AuditWatch(Settings(home=home, audit_db=home / "audit.db"), Metrics())
    assert watch.run() is not None and watch.passed is not None
    original = _rows(store)[2][1]
    store._execute("UPDATE audit SET body = ? WHERE seq = 3",
                   (canonical(json.loads(original) | {"purpose": "not what was decided"}).decode(),))
    second = watch.run()
    assert second is not None and not second.ok and second.first_bad_seq == 3



def test_a_tail_cut_back_in_the_database_is_not_signed_anew(store: AuditStore, signer: AuditSigner,
                                                           public: AuditVerifier) -> None:
    """An insider deletes the newest records and their checkpoints: the next append must not sign
    a chain that no longer holds the head the stage published (it would launder the cut)."""
    published = _published(store)  # record 20
    store._execute("DELETE FROM audit WHERE seq > 10")
    store._execute("DELETE FROM checkpoints WHERE seq > 10")
    with pytest.raises(AuditStoreError, match="no longer holds its published head"):
        store.append([_record("later")], signer, anchor=published)
    assert store.count() == 10 and not verify(store, public, published).ok


def test_a_rewritten_rehashed_chain_without_checkpoints_is_not_signed_anew(store: AuditStore, signer: AuditSigner,
                                                                          public: AuditVerifier) -> None:
    published = _published(store)
    _rewrite_and_rehash(store, 7)
    store._execute("DELETE FROM checkpoints")
    with pytest.raises(AuditStoreError, match="no longer holds its published head"):
        store.append([_record("later")], signer, anchor=published)
    offline = verify(store, public)  # even without the head: signed records left with no checkpoint
    assert not offline.ok and "carry no signed checkpoint" in (offline.problem or "")


def test_a_chain_that_extends_its_published_head_is_signed_on(store: AuditStore, signer: AuditSigner,
                                                             public: AuditVerifier) -> None:
    """A crash between a batch's commit and its head's publication leaves the store a checkpoint
    ahead of sg.audit.heads: that still holds the published head, so appends go on."""
    older = store.checkpoints()[-2]  # the head published before the last batch's
    added, checkpoint = store.append([_record("later")], signer, anchor=older)
    assert added == 1 and checkpoint is not None and verify(store, public, checkpoint).ok
