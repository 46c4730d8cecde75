"""PostgreSQL roles for the audit store: each component's login may do only what its work needs.

Without them every pod held the one DSN that could rewrite the chain: an ingest or gateway pod
taken over could delete or alter audit rows (the audit stage would then refuse to sign, but the
records were gone). With them:

- `<prefix>_audit_writer` (the audit stage): reads and appends the chain and its checkpoints;
  it can neither change nor remove a row.
- `<prefix>_event_register` (the ingest stage): reads and adds to the event id register only.
- `<prefix>_audit_reader` (the gateway's status look-ups, `sgbus audit verify` and `trail`,
  `sgbus replay`): reads the chain and its checkpoints.
- `<prefix>_lookup_recorder` (a person's login, beside the reader: `sgbus audit trail`,
  `chronology`, `audit lookups`): records who looked up a child and reads those records; it may
  add a row, never change or remove one, nor write the columns the database fills in (id, time,
  login). The gateway's login is not one: a taken-over gateway can neither read who is being
  looked into nor add rows to muddy it.

The tables' owner (the DSN `sgbus audit roles --apply` runs with; it needs CREATEROLE) keeps
every right: it is the database insider the signed heads on `sg.audit.heads` guard against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bus.audit.chain import LOOKUP_COLUMNS
from bus.exceptions import SgbusError

#: the store's tables (bus/audit/chain.py _SCHEMA)
CHAIN_TABLES = ("audit", "checkpoints")
REGISTER_TABLES = ("ingested",)
LOOKUP_TABLES = ("lookups",)
#: locked (never written) by the chain's writer while it appends: LOCK TABLE needs UPDATE there
LOCK_TABLE = "audit_append_lock"

ALL_TABLES = (*CHAIN_TABLES, *REGISTER_TABLES, LOCK_TABLE, *LOOKUP_TABLES)

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class RolesError(SgbusError):
    """The roles cannot be set up (never carries the DSN)."""


@dataclass(frozen=True)
class AuditRoles:
    """The three group roles' names (PostgreSQL roles are per server: a prefix per partnership)."""

    prefix: str = "sgbus"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.prefix):
            raise RolesError(f"role prefix {self.prefix!r}: use lower-case letters, digits and _ "
                             "(at most 41 characters, not starting with a digit)")

    @property
    def writer(self) -> str:
        return f"{self.prefix}_audit_writer"

    @property
    def register(self) -> str:
        return f"{self.prefix}_event_register"

    @property
    def reader(self) -> str:
        return f"{self.prefix}_audit_reader"

    @property
    def recorder(self) -> str:
        return f"{self.prefix}_lookup_recorder"

    def all(self) -> tuple[str, str, str, str]:
        return self.writer, self.register, self.reader, self.recorder

    def statements(self) -> list[str]:
        """Create the group roles (without login) if missing and give each exactly its rights.
        Run again, it takes back what the owner gave more since (to them and to PUBLIC); rights
        others gave are reported by `apply`, which then changes nothing."""
        roles = ", ".join(self.all())
        tables = ", ".join(ALL_TABLES)
        chain = ", ".join(CHAIN_TABLES)
        register = ", ".join(REGISTER_TABLES)
        create = "".join(
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
            f"CREATE ROLE {name} NOLOGIN; END IF; " for name in self.all())
        return [
            f"DO $$ BEGIN {create}END $$",
            f"REVOKE ALL ON {tables} FROM PUBLIC, {roles}",
            # No login makes a table of its own: not a second chain beside the real one, not a
            # table that shadows it on someone's search path.
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            # The tables' own schema (wherever the owner's search path put them), by name, quoted.
            "DO $$ DECLARE s text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = "  # noqa: S608
            "c.relnamespace WHERE c.oid = to_regclass('audit')); BEGIN "
            "EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s); "
            f"EXECUTE format('GRANT USAGE ON SCHEMA %I TO {roles}', s); END $$",
            f"GRANT SELECT, INSERT ON {chain} TO {self.writer}",
            f"GRANT UPDATE ON {LOCK_TABLE} TO {self.writer}",
            f"GRANT SELECT, INSERT ON {register} TO {self.register}",
            f"GRANT SELECT ON {chain} TO {self.reader}",
            # Not the columns the database fills in (the row's id, time and login).
            f"GRANT SELECT ON {', '.join(LOOKUP_TABLES)} TO {self.recorder}",
            f"GRANT INSERT ({', '.join(LOOKUP_COLUMNS)}) ON {', '.join(LOOKUP_TABLES)} TO {self.recorder}",
        ]

    def intended(self) -> set[tuple[str, str, str]]:
        """(table, grantee, right): every right on the tables a role other than the owner holds
        once set up."""
        rights = {(t, self.writer, r) for t in CHAIN_TABLES for r in ("SELECT", "INSERT")}
        rights.add((LOCK_TABLE, self.writer, "UPDATE"))
        rights |= {(t, self.register, r) for t in REGISTER_TABLES for r in ("SELECT", "INSERT")}
        rights |= {(t, self.reader, "SELECT") for t in CHAIN_TABLES}
        rights |= {(t, self.recorder, "SELECT") for t in LOOKUP_TABLES}
        return rights

    def intended_columns(self) -> set[tuple[str, str, str, str]]:
        """(table, column, grantee, right): the column rights a role holds once set up."""
        return {(t, c, self.recorder, "INSERT") for t in LOOKUP_TABLES for c in LOOKUP_COLUMNS}


def member_statement(group: str, login: str) -> str:
    """GRANT `group` TO `login`: the login role (made by the operator, with its password) gets
    the group's rights."""
    if not _NAME.fullmatch(login):
        raise RolesError(f"login role {login!r}: use lower-case letters, digits and _ "
                         "(at most 41 characters, not starting with a digit)")
    return f"GRANT {group} TO {login}"


def apply(dsn: str, roles: AuditRoles, members: dict[str, list[str]]) -> None:
    """Create the store's tables (if missing) and the roles, grant them, and make each named
    login a member of its group (`members`: group name -> logins), in one transaction."""
    import psycopg

    from bus.audit.chain import AuditStore, AuditStoreError, require_tls

    try:
        AuditStore(dsn=dsn).close()  # the tables, made by the owner
        with psycopg.connect(require_tls(dsn)) as conn:  # one transaction: all or nothing
            for statement in roles.statements():
                conn.execute(statement.encode())
            for group, logins in members.items():
                for login in logins:
                    conn.execute(member_statement(group, login).encode())
            problems = _left_over(conn, roles)
            if problems:
                conn.rollback()
                raise RolesError("the audit store's tables or roles have rights these roles do not give; "
                                 "revoke them (as whoever gave them) and run it again: " + "; ".join(problems))
    except (AuditStoreError, RolesError):
        raise
    except psycopg.Error as exc:
        # The server's own words (no DSN in them): "must be owner of table audit", "role ... does
        # not exist", "permission denied to create role".
        detail = exc.diag.message_primary or type(exc).__name__
        raise RolesError(f"could not set up the audit store's roles: {detail}") from None


def _left_over(conn: Any, roles: AuditRoles) -> list[str]:
    """What is still wider than `roles.intended()` once set up: rights others gave (the owner's
    REVOKE takes back only its own), column rights, and group roles that can log in, are
    superusers or belong to other roles (and so may hold more)."""
    tables = ALL_TABLES
    problems: list[str] = []
    rows = conn.execute(
        "SELECT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
        " a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = ANY(%s::regclass[]) AND a.grantee <> c.relowner", (list(tables),)).fetchall()
    intended = roles.intended()
    problems += [f"{grantee} has {right} on {table}" + (" WITH GRANT OPTION" if grantable else "")
                 for table, grantee, right, grantable in rows
                 if (table, grantee, right) not in intended or grantable]
    columns = conn.execute(
        "SELECT c.relname, a.attname, CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,"
        " x.privilege_type, x.is_grantable FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid,"
        " aclexplode(a.attacl) x WHERE a.attrelid = ANY(%s::regclass[]) AND x.grantee <> c.relowner",
        (list(tables),)).fetchall()
    wanted = roles.intended_columns()
    problems += [f"{grantee} has {right} on {table}.{column}" + (" WITH GRANT OPTION" if grantable else "")
                 for table, column, grantee, right, grantable in columns
                 if (table, column, grantee, right) not in wanted or grantable]
    groups = conn.execute(
        "SELECT r.rolname, r.rolsuper OR r.rolbypassrls, r.rolcanlogin,"
        " EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid)"
        " FROM pg_roles r WHERE r.rolname = ANY(%s)", (list(roles.all()),)).fetchall()
    for name, mighty, login, member in groups:
        if mighty:
            problems.append(f"{name} is a superuser or bypasses row security")
        if login:
            problems.append(f"{name} can log in (a group role should not)")
        if member:
            problems.append(f"{name} is a member of other roles")
    return sorted(problems)

