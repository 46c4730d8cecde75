"""The day agreements are checked against: the UK's calendar date, not UTC's.

An agreement's `valid_from` and `valid_to` are UK dates (as its signatories wrote them). Checked
against UTC's date, during British Summer Time an agreement ending on 31 March still shared for
the first hour of 1 April, and one starting on 1 April began an hour late.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

UK = ZoneInfo("Europe/London")


def uk_today(now: datetime | None = None) -> date:
    """Today's date in the UK (of `now`, an aware time, when given)."""
    return (now or datetime.now(UTC)).astimezone(UK).date()
