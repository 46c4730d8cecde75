"""The audit stage's short walk (verify `since` a walk that passed): it agrees with the whole
walk on an untouched chain and catches what an insider can do after that walk; the whole walk,
run less often, catches an old record altered in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.audit.chain import AuditStore, Verification, canonical, chain_hash, verify
from bus.audit.signer import AuditSigner, AuditVerifier, load_signer, load_verifier, new_audit_signer, public_keys_path
from bus.audit.watch import AuditWatch
from bus.metrics import Metrics
from bus.settings import Settings
from tests.unit.test_audit_chain import _record


@pytest.fixture
def home(tmp_path: Path) -> Path:
    new_audit_signer(tmp_path)
    return tmp_path


@pytest.fixture
def signer(home: Path) -> AuditSigner:
    return load_signer(home)


@pytest.fixture
def public(home: Path) -> AuditVerifier:
    return load_verifier(public_keys_path(home))


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
    prev = "0" * 64
    for seq, raw in _rows(store):  # record 3 rewritten, every hash after it recomputed
        body = json.loads(raw)
        if seq == 3:
            body["recipient"] = "someone-else"
        digest = chain_hash(prev, body)
        store._execute("UPDATE audit SET body = ?, recipient = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                       (canonical(body).decode(), body["recipient"], prev, digest, seq))
        prev = digest
    result = verify(store, public, since=first)
    assert not result.ok and result.first_bad_seq == 10 and "rewritten" in (result.problem or "")


@pytest.mark.parametrize(("tamper", "problem"), [
    (["DELETE FROM audit WHERE seq > 8", "DELETE FROM checkpoints WHERE seq > 5"], "missing"),
    (["DELETE FROM audit WHERE seq = 14"], "missing"),
    (["DELETE FROM checkpoints WHERE seq = 5"], "checkpoints up to record 10 were removed"),
    (["DELETE FROM checkpoints WHERE seq = 15"], "checkpoints were removed"),
    (["UPDATE audit SET recipient = 'someone-else' WHERE seq = 12"], "column recipient"),
], ids=["tail cut back before the walk", "a record after it", "a checkpoint before it", "a checkpoint after it",
        "a query column after it"])
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


def test_an_old_record_altered_in_place_is_caught_by_the_whole_walk_only(
        walked: tuple[AuditStore, Verification], public: AuditVerifier) -> None:
    """The limit the audit stage's daily whole walk is for (README "What the audit stage verifies")."""
    store, first = walked
    body = json.loads(_rows(store)[6][1]) | {"purpose": "not what was decided"}
    store._execute("UPDATE audit SET body = ? WHERE seq = 7", (canonical(body).decode(),))
    assert verify(store, public, since=first).ok
    whole = verify(store, public)
    assert not whole.ok and whole.first_bad_seq == 7


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
