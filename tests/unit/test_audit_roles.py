"""`sgbus audit roles`: what each component's group role may do, as SQL (no server needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bus.audit.roles import AuditRoles, RolesError, member_statement
from bus.cli import app


def test_no_group_role_is_granted_a_right_to_change_or_remove_rows() -> None:
    grants = [s for s in AuditRoles().statements() if s.startswith("GRANT")]
    # UPDATE only on the lock table (LOCK TABLE ... EXCLUSIVE needs it), which holds no rows.
    assert "GRANT UPDATE ON audit_append_lock TO sgbus_audit_writer" in grants
    others = [s for s in grants if "audit_append_lock" not in s]
    assert others and not any(word in s for s in others for word in ("UPDATE", "DELETE", "TRUNCATE", "ALL"))
    assert "GRANT SELECT ON audit, checkpoints TO sgbus_audit_reader" in grants


def test_setting_up_again_first_takes_back_every_earlier_right_on_the_tables() -> None:
    statements = AuditRoles("pship_a").statements()
    revoke = next(i for i, s in enumerate(statements) if s.startswith("REVOKE ALL ON audit, checkpoints, ingested"))
    assert "PUBLIC" in statements[revoke] and "pship_a_audit_writer" in statements[revoke]
    assert all(not s.startswith("GRANT") for s in statements[:revoke])


@pytest.mark.parametrize("name", ["Sgbus", "x;drop table audit", "1abc", "a" * 42, "", "a-b", 'a"b'])
def test_a_prefix_or_login_that_is_not_a_plain_name_is_refused(name: str) -> None:
    with pytest.raises(RolesError):
        AuditRoles(name)
    with pytest.raises(RolesError):
        member_statement("sgbus_audit_reader", name)


def test_the_cli_prints_the_tables_roles_and_memberships_without_a_database() -> None:
    result = CliRunner().invoke(app, ["audit", "roles", "--writer", "audit_login", "--reader", "gw"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("CREATE TABLE IF NOT EXISTS audit")
    assert "GRANT sgbus_audit_writer TO audit_login;" in lines and "GRANT sgbus_audit_reader TO gw;" in lines


def test_the_cli_refuses_apply_without_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGBUS_AUDIT_DSN", raising=False)
    result = CliRunner().invoke(app, ["audit", "roles", "--apply"])
    assert result.exit_code == 2 and "SGBUS_AUDIT_DSN" in result.output
