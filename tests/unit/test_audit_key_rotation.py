"""Rotating the audit signing key and retiring the old one: old checkpoints still verify, and
whoever later gets hold of the old key cannot sign a newer head anyone would believe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.audit.chain import AuditStore, Checkpoint, checkpoint_message, retirement_point, verify
from bus.audit.signer import (
    AuditSigner,
    load_signer,
    load_verifier,
    new_audit_signer,
    public_keys_path,
    retire_public,
)
from bus.cli import app
from tests.unit.test_audit_chain import _record


def _env(home: Path) -> dict[str, str]:
    return {"SGBUS_HOME": str(home), "SGBUS_AUDIT_DB": str(home / "audit.db")}


def _chain(home: Path) -> tuple[AuditStore, AuditSigner, AuditSigner]:
    """Two batches signed by the first key, then the rotation, then two by the second."""
    old = new_audit_signer(home)
    store = AuditStore(home / "audit.db")
    store.append([_record("a"), _record("b")], old)
    store.append([_record("c")], old)  # record 3
    new = new_audit_signer(home)
    store.append([_record("d")], new)
    store.append([_record("e")], new)
    return store, old, new


def _forged_head(old: AuditSigner, seq: int, head: str, prev_cp: int) -> Checkpoint:
    signed_at = "2026-11-29T00:00:00+00:00"
    return Checkpoint(seq, head, prev_cp, signed_at, old.kid,
                      old.sign(checkpoint_message(seq, head, prev_cp, signed_at)).hex())


def test_a_retired_key_vouches_for_its_own_checkpoints_and_no_later_one(tmp_path: Path) -> None:
    store, old, _new = _chain(tmp_path)
    result = CliRunner().invoke(app, ["keys", "retire-audit", old.kid], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "up to record 3" in result.output
    public = load_verifier(public_keys_path(tmp_path))
    assert public.retired == {old.kid: 3}
    assert verify(store, public).ok  # the old key's checkpoints, before the rotation, still count
    forged = _forged_head(old, 9, "f" * 64, 5)  # the leaked old key, signing a newer head
    assert forged.verifies(load_verifier(public_keys_path(tmp_path))) is False
    before = _forged_head(old, 3, store.record_hash(3) or "", 2)
    assert before.verifies(public)


def test_a_chain_re_signed_with_the_retired_key_fails_verification(tmp_path: Path) -> None:
    """An insider with the database and the leaked old key rewrites the newest record and signs
    a checkpoint over it with the old key: verify refuses it once that key is retired."""
    store, old, _new = _chain(tmp_path)
    seq, head = store.head()
    store.db.execute("DELETE FROM checkpoints WHERE seq = ?", (seq,))
    forged = _forged_head(old, seq, head, seq - 1)
    store.db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                     (forged.seq, forged.hash, forged.prev_checkpoint, forged.signed_at, forged.key_id,
                      forged.signature))
    public = load_verifier(public_keys_path(tmp_path))
    assert verify(store, public).ok  # before retirement: believed
    last, after = retirement_point(store.checkpoints(), old.kid, public)
    assert (last, after) == (3, [seq])  # the forged checkpoint stands out as signed after the successor
    retire_public(public_keys_path(tmp_path), old.kid, last)
    assert not verify(store, load_verifier(public_keys_path(tmp_path))).ok


def test_a_checkpoint_the_old_key_signed_after_its_successor_took_over_does_not_widen_its_retirement(
        tmp_path: Path) -> None:
    store, old, new = _chain(tmp_path)
    store.append([_record("f")], old)  # record 6, by the old key again (an old pod's last append)
    store.append([_record("g")], new)
    public = load_verifier(public_keys_path(tmp_path))
    assert retirement_point(store.checkpoints(), old.kid, public) == (3, [6])
    refused = CliRunner().invoke(app, ["keys", "retire-audit", old.kid], env=_env(tmp_path))
    assert refused.exit_code == 1 and "records 6" in refused.output and "retired" not in public_keys_path(
        tmp_path).read_text()
    forced = CliRunner().invoke(app, ["keys", "retire-audit", old.kid, "--force"], env=_env(tmp_path))
    assert forced.exit_code == 0 and load_verifier(public_keys_path(tmp_path)).retired == {old.kid: 3}


def test_checkpoint_rows_relabelled_in_the_database_cannot_stretch_a_retirement(tmp_path: Path) -> None:
    """Found in a second reading: the point was read from key ids in the checkpoints table; an
    insider relabelling the successor's rows as the old key's retired it at the newest record."""
    store, old, new = _chain(tmp_path)
    store.db.execute("UPDATE checkpoints SET key_id = ? WHERE key_id = ? AND seq = 4", (old.kid, new.kid))
    result = CliRunner().invoke(app, ["keys", "retire-audit", old.kid], env=_env(tmp_path))
    assert result.exit_code == 1 and "does not verify" in result.output
    assert retirement_point(store.checkpoints(), old.kid, load_verifier(public_keys_path(tmp_path)))[0] == 3


def test_retiring_again_keeps_the_same_bound(tmp_path: Path) -> None:
    _store, old, _new = _chain(tmp_path)
    for _ in range(2):
        result = CliRunner().invoke(app, ["keys", "retire-audit", old.kid], env=_env(tmp_path))
        assert result.exit_code == 0 and load_verifier(public_keys_path(tmp_path)).retired == {old.kid: 3}


def test_retiring_the_key_that_still_signs_is_refused(tmp_path: Path) -> None:
    old = new_audit_signer(tmp_path)
    store = AuditStore(tmp_path / "audit.db")
    store.append([_record("a")], old)
    new_audit_signer(tmp_path)  # rotated, but the audit stage has not signed with the new key yet
    result = CliRunner().invoke(app, ["keys", "retire-audit", old.kid], env=_env(tmp_path))
    assert result.exit_code == 1 and "still signs" in result.output
    assert "retired" not in json.loads(public_keys_path(tmp_path).read_text())


def test_rotate_audit_makes_a_new_active_key_and_keeps_the_old_public_key(tmp_path: Path) -> None:
    old = new_audit_signer(tmp_path)
    result = CliRunner().invoke(app, ["keys", "rotate-audit"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    new = load_signer(tmp_path)
    assert new.kid != old.kid and f"retire-audit {old.kid}" in result.output
    assert set(load_verifier(public_keys_path(tmp_path)).keys) == {old.kid, new.kid}
    assert "private" not in result.output


@pytest.mark.parametrize("bad", [-1, "3", True, 2.5])
def test_a_public_key_file_with_a_malformed_retirement_is_refused(tmp_path: Path, bad: object) -> None:
    from bus.exceptions import KeyringError

    old = new_audit_signer(tmp_path)
    path = public_keys_path(tmp_path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "retired": {old.kid: bad}}))
    with pytest.raises(KeyringError):
        load_verifier(path)


@pytest.mark.parametrize(("command", "variable"), [("rotate", "SGBUS_KEYRING_JSON"),
                                                   ("rotate-audit", "SGBUS_AUDIT_SIGNING_KEY_JSON")])
def test_rotating_a_file_no_process_uses_is_refused(tmp_path: Path, command: str, variable: str) -> None:
    """Found in review: with the key given in the environment, rotate said "rotated" and nothing
    in use changed (after a suspected compromise, the operator would believe it had)."""
    new_audit_signer(tmp_path)
    result = CliRunner().invoke(app, ["keys", command], env={**_env(tmp_path), variable: "{}"})
    assert result.exit_code == 2 and variable in result.output
