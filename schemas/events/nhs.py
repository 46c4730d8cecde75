"""NHS events: unscheduled care attendances (CP-IS)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.envelope import Envelope


class CareSettingType(StrEnum):
    EMERGENCY_DEPARTMENT = "emergency_department"
    URGENT_TREATMENT_CENTRE = "urgent_treatment_centre"
    MINOR_INJURIES_UNIT = "minor_injuries_unit"
    WALK_IN_CENTRE = "walk_in_centre"
    OUT_OF_HOURS_GP = "out_of_hours_gp"
    MATERNITY_UNIT = "maternity_unit"


class AttendanceCategory(StrEnum):
    INJURY = "injury"
    ILLNESS = "illness"
    MENTAL_HEALTH = "mental_health"
    POISONING = "poisoning"
    SELF_HARM = "self_harm"
    OTHER = "other"


class DischargeDestination(StrEnum):
    HOME = "home"
    ADMITTED = "admitted"
    TRANSFERRED = "transferred"
    LEFT_BEFORE_TREATMENT = "left_before_treatment"
    POLICE_CUSTODY = "police_custody"
    SOCIAL_CARE_PLACEMENT = "social_care_placement"


class UnscheduledCareAttendance(BaseModel):
    """A child with CP-IS status attended unscheduled care (category, not clinical detail)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    care_setting_ods: str = Field(pattern=r"^[A-Z0-9]{3,6}$")
    care_setting_type: CareSettingType
    arrived_at: AwareDatetime
    attendance_category: AttendanceCategory
    discharge_destination: DischargeDestination | None = None
    responsible_la_code: str = Field(
        pattern=r"^[A-Z0-9]{3}$", description="local authority holding the child's CP-IS status"
    )


class UnscheduledCareAttendanceV1(Envelope):
    event_type: Literal["nhs.unscheduled_care_attendance.v1"]
    payload: UnscheduledCareAttendance
