"""Who looked up a child: every `sgbus audit trail` and `sgbus chronology` leaves a row first.

A child's audit trail and timeline show who was told what about them. Reading them is itself an
access to the child's record that the partnership must be able to account for (a subject access
request asks who has seen a child's data; the IG lead reviews look-ups as they review overrides).
So each look-up is recorded in the audit store *before* anything is shown, and nothing is shown
when it cannot be recorded. A row holds tokens, never the identifier asked about; the reason is
one of a fixed list and the case reference letters and digits, so no free text about a child
reaches the table. The audit reader's login may add rows and read them, never change or remove
one, and PostgreSQL itself records which login added each (bus/audit/roles.py).
"""

from __future__ import annotations

import getpass
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bus.audit.chain import AuditStore


class Reason(StrEnum):
    """Why someone looked a child up (what the IG lead checks the look-up against)."""

    SAFEGUARDING = "safeguarding"  # a safeguarding enquiry, strategy discussion or MASH decision
    SUBJECT_ACCESS = "subject-access"  # answering a subject access request
    DATA_PROTECTION = "data-protection"  # reviewing a share, a complaint or an incident
    AUDIT = "audit"  # routine quality assurance of the sharing
    DEMONSTRATION = "demonstration"  # `make demo`'s own synthetic children only


#: what a person may give on the command line (the demo records its own look-ups)
ASKABLE = [r.value for r in Reason if r is not Reason.DEMONSTRATION]

_CASE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.-]{0,39}")


class LookupRefused(ValueError):
    """A look-up's reason or case reference is not acceptable (the message names the option)."""


def check_case_ref(case_ref: str | None) -> str:
    """The case reference as stored ('' if none): a reference, never a note about the child."""
    if case_ref is None or case_ref == "":
        return ""
    if not _CASE_REF.fullmatch(case_ref):
        raise LookupRefused("--case-ref: letters, digits and / _ . - only, at most 40 characters "
                            "(a case or ticket reference, not a name or a note)")
    return case_ref


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container's uid without a passwd entry)
        import os

        return f"uid:{os.getuid()}"


def record_lookup(store: AuditStore, *, command: str, reason: Reason, case_ref: str, tokens: Iterable[str],
                  asked_as: str = "", now: datetime | None = None) -> str:
    """Record one look-up before its answer is read; returns its id. Raises AuditStoreError when
    it cannot be recorded (the caller then shows nothing)."""
    lookup_id = str(uuid.uuid4())
    store.record_lookup({
        "lookup_id": lookup_id,
        "looked_at": (now or datetime.now(UTC)).isoformat(timespec="microseconds"),
        "command": command,
        "os_user": _os_user(),
        "reason": reason.value,
        "case_ref": check_case_ref(case_ref),
        "asked_as": asked_as,
        "tokens": json.dumps(sorted(set(tokens))),
    })
    return lookup_id


def lookups_about(rows: list[dict[str, str]], tokens: set[str] | None) -> list[dict[str, Any]]:
    """The look-ups (all, or those that asked about any of `tokens`), tokens as lists."""
    found = []
    for row in rows:
        asked = json.loads(row["tokens"])
        if tokens is None or tokens.intersection(asked):
            found.append({**row, "tokens": asked})
    return found


def render(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no look-ups recorded"]
    lines = []
    for r in rows:
        when = r["looked_at"][:19].replace("T", " ")
        who = r["os_user"] + (f" (database login {r['db_login']})" if r["db_login"] else "")
        ref = f", case {r['case_ref']}" if r["case_ref"] else ""
        asked_as = f" as {r['asked_as']}" if r["asked_as"] else ""
        lines.append(f"{when}  {r['command']:<11} by {who}{asked_as}: {r['reason']}{ref}")
    lines.append(f"{len(rows)} look-up(s)")
    return lines
