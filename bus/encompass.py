"""Operation Encompass timeliness: a police domestic-abuse notification is due at a school before
the start of the next school day (school days from the partnership's calendar)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the longest closure a calendar may hold (a summer holiday is about 45 days)
MAX_CLOSURE_DAYS = 120
#: the notification Encompass is about (any version of the schema)
NOTIFICATION_TYPE_PREFIX = "police.domestic_abuse_incident."


class Closure(BaseModel):
    """Days a partnership's schools are closed (holidays, INSET days), inclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=80)
    first: date
    last: date

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.last < self.first:
            raise ValueError("last is before first")
        if (self.last - self.first).days > MAX_CLOSURE_DAYS:
            raise ValueError(f"a closure longer than {MAX_CLOSURE_DAYS} days is not a school holiday")
        return self


class SchoolCalendar(BaseModel):
    """When the school day starts and which weekdays are not school days."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Europe/London"
    day_starts: time = time(8, 30)
    #: the last day whose term dates the partnership has entered: after it every weekday counts
    #: as a school day, so an alert asks for next year's dates before then
    known_until: date | None = None
    closures: list[Closure] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_zone(self) -> SchoolCalendar:
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self

    def is_school_day(self, day: date) -> bool:
        if day.weekday() >= 5:
            return False
        return not any(c.first <= day <= c.last for c in self.closures)

    def deadline(self, incident_at: datetime) -> datetime:
        """The start of the first school day after `incident_at` (UTC). Raises ValueError for a
        time no calendar can place (before 1900) or a calendar closed for over a year."""
        if incident_at.year < 1900:
            raise ValueError("incident time out of range")
        zone = ZoneInfo(self.timezone)
        local = incident_at.astimezone(zone)
        day = local.date()
        for _ in range(400):
            start = datetime.combine(day, self.day_starts, tzinfo=zone)
            if start > local and self.is_school_day(day):
                return start.astimezone(UTC)
            day += timedelta(days=1)
        raise ValueError("no school day within 400 days of the incident")


DEFAULT_CALENDAR = SchoolCalendar()


def is_notification(event_type: str, recipient_agency: str) -> bool:
    return event_type.startswith(NOTIFICATION_TYPE_PREFIX) and recipient_agency == "school"


def late(calendar: SchoolCalendar, incident_at: datetime, delivered_at: datetime) -> bool:
    return delivered_at > calendar.deadline(incident_at)
