"""School events: attendance, suspensions and exclusions, DSL concerns, elective home education."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import Envelope
from schemas.events._base import LaCode, Payload, SchoolUrn, free_text
from schemas.identifiers import FreeText


class AttendanceConcern(Payload):
    """Persistent or severe absence over a period."""

    school_urn: SchoolUrn
    la_code: LaCode
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


class ExclusionReason(StrEnum):
    """DfE reason categories for suspensions and permanent exclusions."""

    PHYSICAL_ASSAULT_PUPIL = "physical_assault_against_pupil"
    PHYSICAL_ASSAULT_ADULT = "physical_assault_against_adult"
    VERBAL_ABUSE_PUPIL = "verbal_abuse_against_pupil"
    VERBAL_ABUSE_ADULT = "verbal_abuse_against_adult"
    BULLYING = "bullying"
    RACIST_ABUSE = "racist_abuse"
    SEXUAL_MISCONDUCT = "sexual_misconduct"
    DRUG_AND_ALCOHOL = "drug_and_alcohol_related"
    DAMAGE = "damage"
    THEFT = "theft"
    PERSISTENT_DISRUPTIVE = "persistent_disruptive_behaviour"
    WEAPON = "use_or_threat_of_use_of_offensive_weapon"
    OTHER = "other"


class SuspensionOrExclusion(Payload):
    """A pupil was suspended or permanently excluded."""

    school_urn: SchoolUrn
    la_code: LaCode
    kind: Literal["suspension", "permanent_exclusion"]
    start_date: date
    sessions: int | None = Field(default=None, ge=1, le=90, description="length of a suspension")
    reason: ExclusionReason
    has_send: bool = Field(description="the pupil has special educational needs or disabilities")
    has_social_worker: bool

    @model_validator(mode="after")
    def _length(self) -> SuspensionOrExclusion:
        if self.kind == "suspension" and self.sessions is None:
            raise ValueError("sessions is required for a suspension")
        return self


class SuspensionOrExclusionV1(Envelope):
    event_type: Literal["school.suspension_or_exclusion.v1"]
    payload: SuspensionOrExclusion


class DslCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SELF_HARM = "self_harm"
    ONLINE_SAFETY = "online_safety"
    CHILD_ON_CHILD_ABUSE = "child_on_child_abuse"
    EXPLOITATION = "exploitation"
    DOMESTIC_ABUSE = "domestic_abuse"
    RADICALISATION = "radicalisation"
    OTHER = "other"


class DslConcern(Payload):
    """A concern recorded by the school's designated safeguarding lead."""

    school_urn: SchoolUrn
    la_code: LaCode
    raised_at: AwareDatetime
    categories: list[DslCategory] = Field(min_length=1, max_length=10)
    referred_to_mash: bool
    summary: FreeText = free_text("the concern, briefly")


class DslConcernV1(Envelope):
    event_type: Literal["school.dsl_concern.v1"]
    payload: DslConcern


class EheReason(StrEnum):
    PHILOSOPHICAL = "philosophical_or_preferential"
    HEALTH = "health"
    DISSATISFACTION = "dissatisfaction_with_school"
    SEND = "special_educational_needs"
    BULLYING = "bullying"
    AVOID_EXCLUSION = "to_avoid_exclusion"
    OTHER = "other"
    NOT_GIVEN = "not_given"


class ElectiveHomeEducation(Payload):
    """Parents told the school they will educate the child at home (the child leaves the roll)."""

    school_urn: SchoolUrn
    la_code: LaCode
    notified_on: date
    off_roll_on: date
    reason_given: EheReason
    known_to_social_care: bool

    @model_validator(mode="after")
    def _order(self) -> ElectiveHomeEducation:
        if self.off_roll_on < self.notified_on:
            raise ValueError("off_roll_on is before notified_on")
        return self


class ElectiveHomeEducationV1(Envelope):
    event_type: Literal["school.elective_home_education.v1"]
    payload: ElectiveHomeEducation


class ChildMissingEducation(Payload):
    """A pupil left the roll for a destination nobody knows (a "lost pupil" Common Transfer
    File): the local authority must try to find the child (children missing education)."""

    school_urn: SchoolUrn
    la_code: LaCode
    left_roll_on: date
    last_attended_on: date | None = None

    @model_validator(mode="after")
    def _order(self) -> ChildMissingEducation:
        if self.last_attended_on is not None and self.last_attended_on > self.left_roll_on:
            raise ValueError("last_attended_on is after left_roll_on")
        return self


class ChildMissingEducationV1(Envelope):
    event_type: Literal["school.child_missing_education.v1"]
    payload: ChildMissingEducation
