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
from bus.audit.lookups import LookupRefused, Reason, check_case_ref, lookups_about, record_lookup
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


@pytest.mark.parametrize("case_ref", ["Jane Smith", "MASH 12", "x" * 41, "ref;drop", "-starts-with-dash"])
def test_a_case_reference_that_could_carry_a_name_or_a_note_is_refused(home: Path, case_ref: str) -> None:
    with pytest.raises(LookupRefused, match="--case-ref"):
        check_case_ref(case_ref)
    code, out = _run(home, "audit", "trail", "--nhs-number", NHS, "--reason", "audit", f"--case-ref={case_ref}")
    assert code == 2 and "oakfield-primary" not in out and _lookups(home) == []


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


def test_the_audit_reader_may_add_lookups_except_the_login_column() -> None:
    from bus.audit.roles import AuditRoles

    sql = " ".join(AuditRoles().statements())
    assert "GRANT SELECT ON lookups TO sgbus_audit_reader" in sql
    insert = next(s for s in AuditRoles().statements() if s.startswith("GRANT INSERT ("))
    assert "db_login" not in insert and "lookup_id" in insert and insert.endswith("ON lookups TO sgbus_audit_reader")
