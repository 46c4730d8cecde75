"""Who looked up a child: every `sgbus audit trail` and `sgbus chronology` leaves a row first.

A child's audit trail and timeline show who was told what about them. Reading them is itself an
access to the child's record that the partnership must be able to account for (a subject access
request asks who has seen a child's data; the IG lead reviews look-ups as they review overrides).
So each look-up is recorded in the audit store *before* anything is shown, and nothing is shown
when it cannot be recorded. A row holds tokens, never the identifier asked about; the reason is
one of a fixed list and the case reference a short reference, so no free text about a child
reaches the table. A look-up recorder's login (a person's) may add rows and read them, never
change or remove one, and the database itself gives each row its id, time and (PostgreSQL)
login (bus/audit/roles.py). What it does not cover is in README ("Every look-up is on record").
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from bus.audit.chain import AuditStore
from schemas.identifiers import nhs_number_is_valid


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
#: an NHS number as people write one: ten digits, or 3-3-4 with one separator
_NHS_LIKE = re.compile(r"(?<!\d)(\d{3})([/_.-]?)(\d{3})\2(\d{4})(?!\d)")
#: a token as bus/pseudonymise/operators/token.py makes it
TOKEN = re.compile(r"psn:[A-Za-z0-9]{1,16}:[a-z2-7]{52}")


class LookupRefused(ValueError):
    """A look-up's reason, case reference or token is not acceptable (the message names the
    option and never quotes the value)."""


def check_case_ref(case_ref: str | None) -> str:
    """The case reference as stored ('' if none): a reference, never a name, a note or a
    child's NHS number."""
    if case_ref is None or case_ref == "":
        return ""
    if not _CASE_REF.fullmatch(case_ref) or not any(c.isdigit() for c in case_ref):
        raise LookupRefused("--case-ref: a case or ticket reference (letters, digits and / _ . -, at least one "
                            "digit, at most 40 characters), not a name or a note")
    if any(nhs_number_is_valid("".join(m.group(1, 3, 4))) for m in _NHS_LIKE.finditer(case_ref)):
        raise LookupRefused("--case-ref: holds an NHS number; give the case's reference, not the child's number")
    return case_ref


def check_token(option: str, value: str) -> str:
    """A token as the bus makes them (`psn:<key id>:<52 base32 letters>`), else refused unquoted."""
    if not TOKEN.fullmatch(value):
        raise LookupRefused(f"{option}: not a token (psn:<key id>:<52 letters a-z and digits 2-7>)")
    return value


def _os_user() -> str:
    """The operating system's name for this process's user: its user id, not $USER or $LOGNAME,
    which anyone can set."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name[:64]
    except KeyError:  # a container's uid without a passwd entry
        return f"uid:{os.getuid()}"


def record_lookup(store: AuditStore, *, command: str, reason: Reason, case_ref: str, tokens: Iterable[str],
                  asked_as: str = "") -> str:
    """Record one look-up before its answer is read; returns the id the store gave it. Raises
    LookupRefused for a bad case reference, AuditStoreError when it cannot be recorded (the
    caller then shows nothing)."""
    return store.record_lookup({
        "command": command,
        "os_user": _os_user(),
        "reason": reason.value,
        "case_ref": check_case_ref(case_ref),
        "asked_as": asked_as,
        "tokens": json.dumps(sorted(set(tokens))),
    })


def _asked(row: dict[str, str]) -> list[str] | None:
    """A row's tokens, or None when it does not hold a list of strings (a row added outside sgbus)."""
    try:
        asked = json.loads(row["tokens"])
    except ValueError:
        return None
    if not isinstance(asked, list) or not all(isinstance(t, str) for t in asked):
        return None
    return asked


def lookups_about(rows: list[dict[str, str]], tokens: set[str] | None) -> list[dict[str, Any]]:
    """The look-ups (all, or those that asked about any of `tokens`), tokens as lists. A row
    whose tokens cannot be read is kept (marked `malformed`): it may be about anyone, and one
    bad row must not stop the answer to a subject access request."""
    found = []
    for row in rows:
        asked = _asked(row)
        if asked is None:
            found.append({**row, "tokens": [], "malformed": True})
        elif tokens is None or tokens.intersection(asked):
            found.append({**row, "tokens": asked})
    return found


def _shown(value: Any, limit: int = 64) -> str:
    """A stored value as the terminal may print it: no control or format characters (a row
    added outside sgbus could hold escape sequences), at most `limit` characters."""
    text = "".join("?" if unicodedata.category(c) in ("Cc", "Cf") else c for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def render(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no look-ups recorded"]
    lines = []
    for r in rows:
        when = _shown(r["looked_at"][:19].replace("T", " "))
        who = _shown(r["os_user"]) + (f" (database login {_shown(r['db_login'])})" if r["db_login"] else "")
        ref = f", case {_shown(r['case_ref'])}" if r["case_ref"] else ""
        asked_as = f" as {_shown(r['asked_as'])}" if r["asked_as"] else ""
        bad = "  (MALFORMED: its tokens cannot be read; it may be about any child)" if r.get("malformed") else ""
        lines.append(f"{when}  {_shown(r['command']):<11} by {who}{asked_as}: {_shown(r['reason'])}{ref}{bad}")
    lines.append(f"{len(rows)} look-up(s)")
    return lines
