"""`sgbus audit trail`: who received what about a child, when, under which agreement and why."""

from __future__ import annotations

from typing import Any

from bus.audit.chain import AuditStore
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring
from bus.pseudonymise.operators import tokens_for_all_keys


def subject_tokens(keyring: Keyring, kind: str, value: str) -> set[str]:
    """Controller tokens of an identifier under every key id (rotation-safe look-up)."""
    return tokens_for_all_keys(keyring, CONTROLLER_DOMAIN, kind, value)


def trail(store: AuditStore, tokens: set[str]) -> list[dict[str, Any]]:
    return store.for_subject(tokens)


def render(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return ["no audit records for this child"]
    lines = []
    for r in records:
        when = r["decided_at"][:19].replace("T", " ")
        head = f"{when}  {r['event_type']:<42} -> {r['recipient']:<28}"
        if r["decision"] == "allow":
            marker = f" (EMERGENCY OVERRIDE declared by {r.get('override_role')})" if r.get("override") else ""
            lines.append(f"{head} SHARED under {r['agreement']}{marker}")
            lines.append(f"      purpose {r['purpose']}; lawful basis: {'; '.join(r['lawful_basis'])}")
            modes = ", ".join(f"{k}={v}" for k, v in sorted(r["identifier_modes"].items())) or "none"
            lines.append(f"      fields: {', '.join(r['fields_shared']) or 'none'}; identifiers: {modes}")
        elif r["decision"] == "view_failed":
            lines.append(f"{head} ALLOWED, NOT DELIVERED (view failed; `sgbus replay --failed`)")
            lines.append(f"      why: {'; '.join(r['reasons'])}")
        else:
            lines.append(f"{head} DENIED")
            lines.append(f"      why: {'; '.join(r['reasons'])}")
        lines.append(f"      policy revision {r['policy_revision']}; audit id {r['audit_id']}")
    shared = sum(1 for r in records if r["decision"] == "allow")
    failed = sum(1 for r in records if r["decision"] == "view_failed")
    tail = f", {failed} allowed but not delivered" if failed else ""
    lines.append(f"{len(records)} decision(s): {shared} shared, {len(records) - shared - failed} denied{tail}")
    return lines
