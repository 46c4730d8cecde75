"""PostgreSQL roles for the audit store: each component's login may do only what its work needs.

Without them every pod held the one DSN that could rewrite the chain: an ingest or gateway pod
taken over could delete or alter audit rows (the audit stage would then refuse to sign, but the
records were gone). With them:

- `<prefix>_audit_writer` (the audit stage): reads and appends the chain and its checkpoints;
  it can neither change nor remove a row.
- `<prefix>_event_register` (the ingest stage): reads and adds to the event id register only.
- `<prefix>_audit_reader` (the gateway's status look-ups, `sgbus audit verify` and `trail`,
  `sgbus replay`): reads the chain and its checkpoints.

The tables' owner (the DSN `sgbus audit roles --apply` runs with) keeps every right: it is the
database insider the signed heads on `sg.audit.heads` guard against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bus.exceptions import SgbusError

#: the store's tables (bus/audit/chain.py _SCHEMA)
CHAIN_TABLES = ("audit", "checkpoints")
REGISTER_TABLES = ("ingested",)

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

    def all(self) -> tuple[str, str, str]:
        return self.writer, self.register, self.reader

    def statements(self) -> list[str]:
        """Create the group roles (without login) if missing and give each exactly its rights.
        Run again, it takes back anything wider given before (and from PUBLIC)."""
        roles = ", ".join(self.all())
        tables = ", ".join((*CHAIN_TABLES, *REGISTER_TABLES))
        chain = ", ".join(CHAIN_TABLES)
        register = ", ".join(REGISTER_TABLES)
        create = "".join(
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
            f"CREATE ROLE {name} NOLOGIN; END IF; " for name in self.all())
        return [
            f"DO $$ BEGIN {create}END $$",
            f"REVOKE ALL ON {tables} FROM PUBLIC, {roles}",
            # The tables' schema (wherever the owner's search path put them), by name and quoted.
            f"DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {roles}', current_schema()); END $$",
            f"GRANT SELECT, INSERT ON {chain} TO {self.writer}",
            f"GRANT SELECT, INSERT ON {register} TO {self.register}",
            f"GRANT SELECT ON {chain} TO {self.reader}",
        ]


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

    from bus.audit.chain import AuditStore, AuditStoreError

    try:
        AuditStore(dsn=dsn).close()  # the tables, made by the owner
        with psycopg.connect(_tls(dsn)) as conn:  # one transaction: all or nothing
            for statement in roles.statements():
                conn.execute(statement.encode())
            for group, logins in members.items():
                for login in logins:
                    conn.execute(member_statement(group, login).encode())
    except AuditStoreError:
        raise
    except psycopg.Error as exc:
        # The server's own words (no DSN in them): "must be owner of table audit", "role ... does
        # not exist", "permission denied to create role".
        detail = exc.diag.message_primary or type(exc).__name__
        raise RolesError(f"could not set up the audit store's roles: {detail}") from None


def _tls(dsn: str) -> str:
    from bus.audit.chain import require_tls

    return require_tls(dsn)
