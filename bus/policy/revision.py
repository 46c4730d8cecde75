"""The policy revision: a hash over every Rego file and the partnership data loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# policies/system holds OPA's own API authorisation (system.authz), loaded from a file when
# OPA starts, never uploaded with the data-sharing policies nor part of their revision.
NOT_SHARING_POLICY = {"data", "system"}


def rego_files(policies_dir: Path, *, include_tests: bool = False) -> list[Path]:
    files = sorted(p for p in policies_dir.rglob("*.rego")
                   if not NOT_SHARING_POLICY & set(p.relative_to(policies_dir).parts))
    return [p for p in files if include_tests or not p.name.endswith("_test.rego")]


def policy_revision(policies_dir: Path, data: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """`extra`: other bundle data decisions depend on (the catalogue, the signing key register)."""
    digest = hashlib.sha256()
    for path in rego_files(policies_dir):
        digest.update(str(path.relative_to(policies_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    if extra:
        digest.update(b"\0" + json.dumps(extra, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + digest.hexdigest()[:16]
