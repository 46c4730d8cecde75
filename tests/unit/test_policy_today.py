"""Agreement dates are UK dates: the day they are checked against is the UK's."""

from __future__ import annotations

from datetime import UTC, date, datetime

from bus.policy.today import uk_today


def test_late_evening_utc_in_summer_time_is_already_the_next_uk_day() -> None:
    """Found in review: checked against UTC's date, an agreement ending 31 March 2027 still
    shared for the first hour of 1 April (BST), and one starting 1 April began an hour late."""
    assert uk_today(datetime(2027, 3, 31, 23, 30, tzinfo=UTC)) == date(2027, 4, 1)


def test_in_winter_the_uk_day_is_utcs() -> None:
    assert uk_today(datetime(2027, 1, 31, 23, 30, tzinfo=UTC)) == date(2027, 1, 31)
    assert uk_today(datetime(2027, 2, 1, 0, 0, tzinfo=UTC)) == date(2027, 2, 1)
