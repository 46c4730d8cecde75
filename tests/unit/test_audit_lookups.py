"""Who looked up a child: `sgbus audit trail` records the look-up before it shows anything, and
`sgbus audit lookups` answers who asked (SQLite store; PostgreSQL's logins in
tests/integration/test_audit_roles.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.audit.chain import AuditStore
from bus.audit.lookups import LookupRefused, Reason, check_case_ref, check_token, lookups_about, record_lookup, render
from bus.audit.signer import new_audit_signer
from bus.cli import app
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, save_keyring
from bus.pseudonymise.operators.token import token
from tests.unit.test_audit_chain import KEYRING, NHS, _record


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A bus home with the keyring the records' tokens were made with and two decisions about NHS."""
    save_keyring(KEYRING, tmp_path / "keyring.json")
    store = AuditStore(tmp_path / "audit.db")
    store.append([_record("oakfield-primary"), _record("riverside-academy", allow=False)], new_audit_signer(tmp_path))
    store.close()
    return tmp_path


def _run(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin,
                                env={"SGBUS_HOME": str(home), "SGBUS_AUDIT_DB": str(home / "audit.db")})
    return result.exit_code, result.output


def _lookups(home: Path) -> list[dict[str, str]]:
    store = AuditStore(home / "audit.db")
    try:
        return store.lookups()
    finally:
        store.close()


def test_a_trail_without_a_reason_is_refused_and_shows_and_records_nothing(home: Path) -> None:
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS)
    assert code == 2 and "--reason" in out and "safeguarding" in out
    assert "oakfield-primary" not in out and _lookups(home) == []
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "demonstration")
    assert code == 2 and "oakfield-primary" not in out  # the demo's own reason is not a person's


def test_the_trail_is_shown_once_its_lookup_is_recorded_with_tokens_not_the_number(home: Path) -> None:
    code, out = _run(home, "audit", "trail", "--nhs-number", "-", "--reason", "subject-access",
                     "--case-ref", "SAR/2026/17", stdin=f"{NHS}\n")
    assert code == 0 and "oakfield-primary" in out and "DENIED" in out
    [row] = _lookups(home)
    assert row["command"] == "audit trail" and row["reason"] == "subject-access" and row["case_ref"] == "SAR/2026/17"
    assert row["os_user"] and row["db_login"] == ""  # SQLite has no logins
    assert json.loads(row["tokens"]) == [token(KEYRING, CONTROLLER_DOMAIN, "nhs_number", NHS)]
    assert NHS not in json.dumps(row)


def test_nothing_is_shown_when_the_lookup_cannot_be_recorded(home: Path) -> None:
    db = sqlite3.connect(home / "audit.db")
    db.execute("CREATE TRIGGER no_lookups BEFORE INSERT ON lookups BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    db.close()
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "safeguarding")
    assert code == 1 and "could not be recorded" in out
    assert "oakfield-primary" not in out and "DSA-" not in out


@pytest.mark.parametrize("case_ref", ["Jane Smith", "MASH 12", "x" * 41, "ref;drop", "-starts-with-dash", "Jane.Smith",
                                      "9434765919", "MASH/943-476-5919", "943.476.5919"])
def test_a_case_reference_that_could_carry_a_name_or_a_note_is_refused(home: Path, case_ref: str) -> None:
    with pytest.raises(LookupRefused, match="--case-ref"):
        check_case_ref(case_ref)
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "audit", f"--case-ref={case_ref}")
    assert code == 2 and "oakfield-primary" not in out and _lookups(home) == []
    assert case_ref not in out  # not quoted back


@pytest.mark.parametrize("case_ref", ["MASH/2026/0412", "S47-1182", "SAR.17", "INC_2026_5"])
def test_a_case_reference_is_taken(case_ref: str) -> None:
    assert check_case_ref(case_ref) == case_ref


def test_a_token_that_is_not_one_is_refused_before_anything_is_recorded(home: Path) -> None:
    """Found in review: any text after psn: was stored as the token asked about."""
    free_text = "psn:Jane Smith 9990001234 hit by dad"
    with pytest.raises(LookupRefused):
        check_token("--token", free_text)
    code, out = _run(home, "audit", "trail", "--token", free_text, "--reason", "audit")
    assert code == 2 and "Jane" not in out and _lookups(home) == []
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "gossip about Jane")
    assert code == 2 and "Jane" not in out and "safeguarding" in out


def test_audit_lookups_answers_who_looked_up_this_child_across_linkage_domains(home: Path) -> None:
    """The chronology is asked for with the MASH's token (its linkage domain), the trail with the
    controller's: asked by NHS number, both are found, and another child's look-up is not."""
    mash_token = token(KEYRING, "mash", "nhs_number", NHS)
    store = AuditStore(home / "audit.db")
    record_lookup(store, command="chronology", reason=Reason.SAFEGUARDING, case_ref="", tokens={mash_token},
                  asked_as="northshire-csc")
    record_lookup(store, command="audit trail", reason=Reason.AUDIT, case_ref="",
                  tokens={token(KEYRING, CONTROLLER_DOMAIN, "nhs_number", "9990001234")})
    store.close()
    assert _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "data-protection")[0] == 0
    code, out = _run(home, "audit", "lookups", "--nhs-number", NHS)
    assert code == 0, out
    assert "chronology" in out and "as northshire-csc: safeguarding" in out and "data-protection" in out
    assert ": audit" not in out and "2 look-up(s)" in out and NHS not in out
    code, out = _run(home, "audit", "lookups", "--json")
    assert code == 0 and len(out.splitlines()) == 3
    assert {json.loads(line)["reason"] for line in out.splitlines()} == {"safeguarding", "audit", "data-protection"}


def test_lookups_about_matches_any_token_asked() -> None:
    rows = [{"tokens": json.dumps(["psn:a", "psn:b"])}, {"tokens": json.dumps(["psn:c"])}]
    assert [r["tokens"] for r in lookups_about(rows, {"psn:b"})] == [["psn:a", "psn:b"]]
    assert len(lookups_about(rows, None)) == 2


def test_a_row_added_outside_sgbus_neither_stops_the_answer_nor_reaches_the_terminal_raw(home: Path) -> None:
    """Found in review: one row whose tokens were not JSON made `audit lookups` fail for
    everyone, and a stored escape sequence would have reached the operator's terminal."""
    db = sqlite3.connect(home / "audit.db")
    db.execute("INSERT INTO lookups (command, os_user, reason, case_ref, asked_as, tokens) VALUES "
               "('audit trail', 'mallory\x1b[2J', 'audit', '', '', 'not json'), "
               "('chronology', 'eve', 'audit', '', '', '5')")
    db.commit()
    db.close()
    code, out = _run(home, "audit", "lookups", "--nhs-number", NHS)
    assert code == 0, out
    assert out.count("MALFORMED") == 2 and "\x1b" not in out and "mallory?[2J" in out
    rows = lookups_about(_lookups(home), None)
    assert all(r["malformed"] for r in rows) and "\x1b" not in "".join(render(rows))


def test_the_store_gives_a_lookup_its_id_and_time_and_refuses_an_unknown_reason(home: Path) -> None:
    store = AuditStore(home / "audit.db")
    first = record_lookup(store, command="audit trail", reason=Reason.AUDIT, case_ref="", tokens=set())
    second = record_lookup(store, command="audit trail", reason=Reason.AUDIT, case_ref="", tokens=set())
    rows = store.lookups()
    assert first != second and [r["lookup_id"] for r in rows] == [first, second]
    assert rows[0]["looked_at"] <= rows[1]["looked_at"] and rows[0]["looked_at"].startswith("20")
    with pytest.raises(sqlite3.IntegrityError):  # the table's own check, for rows added outside sgbus
        store.db.execute("INSERT INTO lookups (command, os_user, reason, case_ref, asked_as, tokens) "
                         "VALUES ('audit trail', 'u', 'curiosity', '', '', '[]')")
    store.close()


def test_only_the_lookup_recorder_may_add_lookups_and_not_the_columns_the_database_fills_in() -> None:
    from bus.audit.roles import AuditRoles

    statements = AuditRoles().statements()
    assert "GRANT SELECT ON lookups TO sgbus_lookup_recorder" in statements
    insert = next(s for s in statements if s.startswith("GRANT INSERT ("))
    assert insert.endswith("ON lookups TO sgbus_lookup_recorder")
    assert not any(c in insert for c in ("db_login", "lookup_id", "looked_at")) and "tokens" in insert
    assert not any("lookups" in s and "sgbus_audit_reader" in s for s in statements if s.startswith("GRANT"))


def test_the_chronology_reads_nothing_when_its_lookup_cannot_be_recorded(home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import bus.concern.chronology

    def must_not_read(*_: object, **__: object) -> None:
        raise AssertionError("the MASH's topic was read before the look-up was on record")

    monkeypatch.setattr(bus.concern.chronology, "timeline", must_not_read)
    db = sqlite3.connect(home / "audit.db")
    db.execute("CREATE TRIGGER no_lookups BEFORE INSERT ON lookups BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    db.close()
    code, out = _run(home, "chronology", "--token", token(KEYRING, "mash", "nhs_number", NHS), "--reason",
                     "safeguarding")
    assert code == 1 and "could not be recorded" in out
