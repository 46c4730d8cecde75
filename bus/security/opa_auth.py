"""OPA's bearer tokens: one per role (`admin` writes policies and data, `worker` only asks for
decisions); OPA holds only their SHA-256 (policies/system/authz.rego)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from bus.security.credentials import CredentialStore
from bus.security.files import private_dir, write_private

OpaRole = Literal["admin", "worker"]
ROLES: tuple[OpaRole, ...] = ("admin", "worker")


def _name(role: OpaRole) -> str:
    return f"opa-{role}"


def local_token(home: Path, role: OpaRole) -> str:
    """The role's token from the local stack's credential store (created on first use)."""
    cred, _ = CredentialStore(home).ensure(_name(role))
    return cred.password


def write_token_hashes(home: Path, directory: Path) -> Path:
    """`<directory>/system/sgbus_tokens/data.json`, loaded by OPA at start as
    data.system.sgbus_tokens; returns `directory` (what `opa run` is given)."""
    hashes = {role: hashlib.sha256(local_token(home, role).encode()).hexdigest() for role in ROLES}
    private_dir(directory)
    write_private(directory / "system" / "sgbus_tokens" / "data.json", json.dumps(hashes))
    return directory
