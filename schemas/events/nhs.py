"""NHS events: CP-IS unscheduled care, safeguarding and pre-birth concerns, CAMHS referrals."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import Envelope
from schemas.events._base import LaCode, OdsCode, Payload, TeamName, free_text
from schemas.identifiers import FreeText


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


class UnscheduledCareAttendance(Payload):
    """A child with CP-IS status attended unscheduled care (category, not clinical detail)."""

    care_setting_ods: OdsCode
    care_setting_type: CareSettingType
    arrived_at: AwareDatetime
    attendance_category: AttendanceCategory
    discharge_destination: DischargeDestination | None = None
    responsible_la_code: LaCode = Field(description="local authority holding the child's CP-IS status")


class UnscheduledCareAttendanceV1(Envelope):
    event_type: Literal["nhs.unscheduled_care_attendance.v1"]
    payload: UnscheduledCareAttendance


class HealthRole(StrEnum):
    NURSE = "nurse"
    DOCTOR = "doctor"
    HEALTH_VISITOR = "health_visitor"
    MIDWIFE = "midwife"
    SCHOOL_NURSE = "school_nurse"
    GP = "gp"
    NAMED_NURSE = "named_nurse_safeguarding"


class ConcernCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    FABRICATED_ILLNESS = "fabricated_or_induced_illness"
    SELF_HARM = "self_harm"
    DOMESTIC_ABUSE = "domestic_abuse"
    EXPLOITATION = "exploitation"
    FGM = "female_genital_mutilation"
    OTHER = "other"


class SafeguardingConcern(Payload):
    """A health professional's safeguarding concern about a child."""

    raised_at: AwareDatetime
    raised_by_role: HealthRole
    care_setting_ods: OdsCode
    categories: list[ConcernCategory] = Field(min_length=1, max_length=10)
    referred_to_childrens_services: bool
    responsible_la_code: LaCode | None = None
    summary: FreeText = free_text("the concern, briefly")


class SafeguardingConcernV1(Envelope):
    event_type: Literal["nhs.safeguarding_concern.v1"]
    payload: SafeguardingConcern


class PrebirthFactor(StrEnum):
    SUBSTANCE_MISUSE = "substance_misuse"
    DOMESTIC_ABUSE = "domestic_abuse"
    PARENTAL_MENTAL_HEALTH = "parental_mental_health"
    PREVIOUS_CHILD_REMOVED = "previous_child_removed"
    PARENTAL_LEARNING_DISABILITY = "parental_learning_disability"
    HOMELESSNESS = "homelessness"
    CONCEALED_PREGNANCY = "concealed_pregnancy"
    YOUNG_PARENT = "young_parent"


class PrebirthConcern(Payload):
    """Midwifery concern about an unborn child (the subject has an expected date of delivery)."""

    booking_trust_ods: OdsCode
    gestation_weeks: int = Field(ge=4, le=45)
    factors: list[PrebirthFactor] = Field(min_length=1, max_length=8)
    midwife_team: TeamName
    responsible_la_code: LaCode
    summary: FreeText | None = free_text("the concern, briefly", required=False)


class PrebirthConcernV1(Envelope):
    prebirth: ClassVar[bool] = True
    event_type: Literal["nhs.prebirth_concern.v1"]
    payload: PrebirthConcern


class CamhsStatus(StrEnum):
    RECEIVED = "received"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WAITING = "waiting"
    IN_TREATMENT = "in_treatment"
    DISCHARGED = "discharged"


class CamhsReferralStatus(Payload):
    """Where a child's referral to mental health services (CAMHS) stands; no clinical detail."""

    service_ods: OdsCode
    referral_received_at: AwareDatetime
    status: CamhsStatus
    status_at: AwareDatetime
    urgency: Literal["routine", "urgent", "emergency"]
    referrer_agency: Literal["police", "nhs", "school", "social_care", "self_or_family"]

    @model_validator(mode="after")
    def _order(self) -> CamhsReferralStatus:
        if self.status_at < self.referral_received_at:
            raise ValueError("status_at is before referral_received_at")
        return self


class CamhsReferralStatusV1(Envelope):
    event_type: Literal["nhs.camhs_referral_status.v1"]
    payload: CamhsReferralStatus
