"""Apply the partnership's principals to the broker: SCRAM users and ACLs, added, changed and
removed so the broker holds exactly what `principals()` derives (`sgbus partners sync`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from bus.exceptions import StackError
from bus.policy.data import Partnership
from bus.security.credentials import CredentialStore
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import ADMIN, GATEWAY, REPLAYER, STAGE_PRINCIPALS, Grant, Principal, principals

SCRAM_ITERATIONS = 8192
MANAGED_PREFIXES = ("publisher.", "partner.", "delivery.")
_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATION = {"read": AclOperation.READ, "write": AclOperation.WRITE, "describe": AclOperation.DESCRIBE,
              "idempotent_write": AclOperation.IDEMPOTENT_WRITE, "create": AclOperation.CREATE}


@dataclass
class SyncReport:
    users_created: list[str] = field(default_factory=list)
    users_removed: list[str] = field(default_factory=list)
    acls_created: int = 0
    acls_removed: int = 0

    def summary(self) -> str:
        return (f"{len(self.users_created)} principals added, {len(self.users_removed)} removed; "
                f"{self.acls_created} ACLs added, {self.acls_removed} removed")


def is_managed(username: str) -> bool:
    """A principal name of the kind `principals()` derives (see bus/security/principals.py)."""
    return (username in STAGE_PRINCIPALS.values() or username in (GATEWAY, REPLAYER)
            or username.startswith(MANAGED_PREFIXES))


def binding(principal: Principal, grant: Grant) -> AclBinding:
    return AclBinding(_RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern], principal.kafka, "*",
                      _OPERATION[grant.operation], AclPermissionType.ALLOW)


def _key(b: AclBinding) -> tuple[str, ...]:
    return (str(b.restype), b.name, str(b.resource_pattern_type), b.principal, b.host, str(b.operation),
            str(b.permission_type))


def admin_client(access: KafkaAccess) -> AdminClient:
    return AdminClient(access.librdkafka(log_level=0))


def upsert_scram(admin: AdminClient, username: str, password: str, timeout_s: float = 30.0) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(username, info, password.encode())])
    for fut in futures.values():
        fut.result(timeout_s)


def scram_users(admin: AdminClient, timeout_s: float = 30.0) -> set[str]:
    """Names of the SCRAM users the broker knows (none at all is an empty set, not an error)."""
    future: Any = admin.describe_user_scram_credentials(None)  # one future when asked for all
    try:
        return set(future.result(timeout_s))
    except KafkaException as exc:
        if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.RESOURCE_NOT_FOUND:
            return set()
        raise


def sync_principals(access: KafkaAccess, partnership: Partnership, home: Path, timeout_s: float = 30.0) -> SyncReport:
    """Make the broker's SCRAM users and ACLs match the partnership; new principals get a new
    secret in the local credential store. `access` must be the admin principal."""
    report = SyncReport()
    store = CredentialStore(home)
    admin = admin_client(access)
    wanted = principals(partnership)
    names = {p.name for p in wanted}
    try:
        existing = scram_users(admin, timeout_s)
        for p in wanted:
            if p.name == ADMIN or p.name in existing:
                # Never replace a secret the broker already has: its holder may be the only one
                # who still knows it (a partner's file can be deleted once handed over).
                continue
            cred = store.get(p.name) or store.put(p.name)
            upsert_scram(admin, cred.username, cred.password, timeout_s)
            report.users_created.append(p.name)
        stale = sorted(u for u in existing - names if is_managed(u))
        if stale:
            info = ScramMechanism.SCRAM_SHA_512
            for fut in admin.alter_user_scram_credentials(
                    [UserScramCredentialDeletion(u, info) for u in stale]).values():
                fut.result(timeout_s)
            for name in stale:
                store.remove(name)
            report.users_removed = stale

        desired = {_key(b): b for p in wanted for b in (binding(p, g) for g in sorted(p.grants))}
        any_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
                                      AclOperation.ANY, AclPermissionType.ANY)
        # Only ALLOW bindings of principals sgbus manages are ours to change: an operator's DENY
        # on a compromised partner, or another system's users, are left as they are.
        current = {_key(b): b for b in admin.describe_acls(any_filter).result(timeout_s)
                   if b.permission_type == AclPermissionType.ALLOW
                   and is_managed(b.principal.removeprefix("User:"))}
        to_create = [b for k, b in desired.items() if k not in current]
        to_delete = [b for k, b in current.items() if k not in desired]
        if to_create:
            for fut in admin.create_acls(to_create).values():
                fut.result(timeout_s)
        if to_delete:
            filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                        b.operation, b.permission_type) for b in to_delete]
            for fut in admin.delete_acls(filters).values():
                fut.result(timeout_s)
        report.acls_created, report.acls_removed = len(to_create), len(to_delete)
    except Exception as exc:  # confluent-kafka raises KafkaException with the broker's error
        raise StackError(f"could not apply principals and ACLs: {exc}") from None
    return report


def rotate(access: KafkaAccess, home: Path, name: str, timeout_s: float = 30.0) -> None:
    """A new secret for `name`: the broker first (open sessions keep working until they
    re-authenticate, within the hour), then the local store. The old secret need not be on this
    host (the README advises deleting a partner's file once sent): a leaked one can always be
    replaced. The caller names a principal of the partnership."""
    store = CredentialStore(home)
    # Kept on disk before the broker switches, so a crash in between loses no secret.
    new = store.put(f".{name}.next")
    try:
        upsert_scram(admin_client(access), name, new.password, timeout_s)
    except Exception as exc:
        store.remove(f".{name}.next")
        raise StackError(f"could not rotate the secret of {name}: {exc}") from None
    store.put(name, new.password)
    store.remove(f".{name}.next")
