"""School events: attendance concerns reported to the local authority."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.envelope import Envelope


class AttendanceConcern(BaseModel):
    """Persistent or severe absence over a period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    school_urn: str = Field(pattern=r"^[0-9]{6}$")
    la_code: str = Field(pattern=r"^[A-Z0-9]{3}$")
    period_start: date
    period_end: date
    sessions_possible: int = Field(ge=1, le=400)
    sessions_attended: int = Field(ge=0, le=400)
    attendance_pct: float = Field(ge=0, le=100)
    consecutive_absences: int = Field(ge=0, le=400)

    @model_validator(mode="after")
    def _consistent(self) -> AttendanceConcern:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        if self.sessions_attended > self.sessions_possible:
            raise ValueError("sessions_attended exceeds sessions_possible")
        expected = 100 * self.sessions_attended / self.sessions_possible
        if abs(expected - self.attendance_pct) > 0.5:
            raise ValueError("attendance_pct does not match sessions_attended / sessions_possible")
        return self


class AttendanceConcernV1(Envelope):
    event_type: Literal["school.attendance_concern.v1"]
    payload: AttendanceConcern
