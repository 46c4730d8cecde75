"""Operation Encompass deadlines: the start of the next school day after the incident, per the partnership calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bus.encompass import Closure, SchoolCalendar, is_notification, late

CAL = SchoolCalendar(closures=[Closure(name="Christmas", first=date(2026, 12, 21), last=date(2027, 1, 1))])


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("incident", "deadline"), [
    (utc(2026, 11, 26, 20, 0), utc(2026, 11, 27, 8, 30)),   # Thursday night -> Friday (GMT: local = UTC)
    (utc(2026, 11, 27, 20, 0), utc(2026, 11, 30, 8, 30)),   # Friday night -> Monday
    (utc(2026, 11, 28, 12, 0), utc(2026, 11, 30, 8, 30)),   # Saturday -> Monday
    (utc(2026, 11, 30, 6, 0), utc(2026, 11, 30, 8, 30)),    # Monday before school -> the same morning
    (utc(2026, 11, 30, 8, 30), utc(2026, 12, 1, 8, 30)),    # exactly at the start -> the next day
    (utc(2026, 12, 18, 19, 0), utc(2027, 1, 4, 8, 30)),     # last day of term -> after the holiday
    (utc(2027, 6, 10, 20, 0), utc(2027, 6, 11, 7, 30)),     # British Summer Time: 08:30 BST is 07:30 UTC
])
def test_deadline_is_the_start_of_the_next_school_day(incident: datetime, deadline: datetime) -> None:
    assert CAL.deadline(incident) == deadline


def test_late_means_delivered_after_the_deadline() -> None:
    incident = utc(2026, 11, 26, 20, 0)
    assert not late(CAL, incident, utc(2026, 11, 27, 8, 29))
    assert late(CAL, incident, utc(2026, 11, 27, 8, 31))


def test_only_police_domestic_abuse_notifications_to_schools_count() -> None:
    assert is_notification("police.domestic_abuse_incident.v1", "school")
    assert is_notification("police.domestic_abuse_incident.v2", "school")
    assert not is_notification("police.domestic_abuse_incident.v1", "social_care")
    assert not is_notification("police.missing_episode.v1", "school")


def test_calendar_refuses_a_closure_that_ends_before_it_starts_and_an_unknown_zone() -> None:
    with pytest.raises(ValidationError, match="last is before first"):
        Closure(name="x", first=date(2027, 1, 2), last=date(2027, 1, 1))
    with pytest.raises(ValidationError, match="unknown time zone"):
        SchoolCalendar(timezone="Europe/Atlantis")


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)))
def test_deadline_is_always_a_later_school_day_start(naive: datetime) -> None:
    incident = naive.replace(tzinfo=UTC)
    deadline = CAL.deadline(incident)
    assert deadline > incident
    local = deadline.astimezone(ZoneInfo(CAL.timezone))
    assert local.time() == time(8, 30) and CAL.is_school_day(local.date())
    # No school day start is skipped between the incident and the deadline.
    day = incident.astimezone(ZoneInfo(CAL.timezone)).date()
    while day < local.date():
        start = datetime.combine(day, time(8, 30), tzinfo=ZoneInfo(CAL.timezone))
        assert not (start > incident and CAL.is_school_day(day))
        day += timedelta(days=1)
