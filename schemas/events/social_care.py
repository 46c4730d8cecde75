"""Children's social care events: protection plans, looked-after status, referrals, strategy discussions."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import Agency, Envelope
from schemas.events._base import LaCode, Payload, TeamName, free_text
from schemas.identifiers import FreeText

TeamContact = str  # the team's duty line; validated by pattern below, never a person's number


class AbuseCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    MULTIPLE = "multiple"


class ChildProtectionPlan(Payload):
    """A child protection plan started or ended."""

    action: Literal["start", "end"]
    plan_start: date
    plan_end: date | None = None
    category: AbuseCategory
    local_authority_code: LaCode
    team_name: TeamName
    team_contact: TeamContact = Field(pattern=r"^\+?[0-9 ]{10,16}$", description="the team's duty line")

    @model_validator(mode="after")
    def _consistent(self) -> ChildProtectionPlan:
        if self.action == "end" and self.plan_end is None:
            raise ValueError("plan_end is required when action is end")
        if self.plan_end is not None and self.plan_end < self.plan_start:
            raise ValueError("plan_end is before plan_start")
        return self


class ChildProtectionPlanV1(Envelope):
    event_type: Literal["social_care.child_protection_plan.v1"]
    payload: ChildProtectionPlan


class LegalStatus(StrEnum):
    """Looked-after legal status codes (SSDA903)."""

    C1 = "C1"  # interim care order
    C2 = "C2"  # full care order
    D1 = "D1"  # freeing order
    E1 = "E1"  # placement order
    J1 = "J1"  # remanded to local authority accommodation
    J2 = "J2"  # placed in LA accommodation under PACE
    J3 = "J3"  # sentenced to a youth rehabilitation order with residence requirement
    L1 = "L1"  # under police protection
    L2 = "L2"  # emergency protection order
    L3 = "L3"  # child assessment order, away from home
    V2 = "V2"  # single period of accommodation under s20
    V3 = "V3"  # short breaks, single placement
    V4 = "V4"  # short breaks, multiple placements


class PlacementType(StrEnum):
    FOSTER = "foster_care"
    KINSHIP = "kinship_care"
    RESIDENTIAL = "childrens_home"
    PLACED_WITH_PARENTS = "placed_with_parents"
    SUPPORTED_ACCOMMODATION = "supported_accommodation"
    SECURE = "secure_unit"
    OTHER = "other"


class LookedAfterStatus(Payload):
    """A child became, or stopped being, looked after; care leavers up to 25 are included."""

    action: Literal["start", "end", "care_leaver_update"]
    legal_status: LegalStatus
    period_start: date
    period_end: date | None = None
    placing_authority_code: LaCode
    placement_type: PlacementType
    placement_la_code: LaCode | None = Field(default=None, description="where the placement is, if elsewhere")

    @model_validator(mode="after")
    def _consistent(self) -> LookedAfterStatus:
        if self.action == "end" and self.period_end is None:
            raise ValueError("period_end is required when action is end")
        if self.period_end is not None and self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class LookedAfterStatusV1(Envelope):
    max_age_years: ClassVar[int] = 25  # care leavers are supported up to 25
    event_type: Literal["social_care.looked_after_status.v1"]
    payload: LookedAfterStatus


class ReferralSource(StrEnum):
    POLICE = "police"
    HEALTH = "health"
    SCHOOL = "school"
    LA_SERVICES = "local_authority_services"
    INDIVIDUAL = "individual"
    ANONYMOUS = "anonymous"
    OTHER = "other"


class ReferralOutcomeKind(StrEnum):
    NO_FURTHER_ACTION = "no_further_action"
    EARLY_HELP = "early_help"
    ASSESSMENT = "child_and_family_assessment"
    STRATEGY_DISCUSSION = "strategy_discussion_s47"
    ALREADY_OPEN = "already_open_case"


class ReferralOutcome(Payload):
    """The outcome of a referral to children's social care (so the referrer knows)."""

    referral_received_at: AwareDatetime
    referral_source: ReferralSource
    outcome: ReferralOutcomeKind
    outcome_at: AwareDatetime
    local_authority_code: LaCode
    feedback_to_referrer: FreeText | None = free_text("what the referrer is told", required=False)

    @model_validator(mode="after")
    def _order(self) -> ReferralOutcome:
        if self.outcome_at < self.referral_received_at:
            raise ValueError("outcome_at is before referral_received_at")
        return self


class ReferralOutcomeV1(Envelope):
    event_type: Literal["social_care.referral_outcome.v1"]
    payload: ReferralOutcome


class StrategyReason(StrEnum):
    SIGNIFICANT_HARM = "reasonable_cause_to_suspect_significant_harm"
    EXPLOITATION = "exploitation"
    MISSING = "repeat_missing"
    ALLEGATION_AGAINST_PROFESSIONAL = "allegation_against_professional"
    OTHER = "other"


class StrategyDiscussionRequest(Payload):
    """Social care asks partners to join a strategy discussion (Children Act 1989 s.47)."""

    requested_at: AwareDatetime
    respond_by: AwareDatetime
    local_authority_code: LaCode
    requesting_team: TeamName
    reason: StrategyReason
    invited_agencies: list[Agency] = Field(min_length=1, max_length=4)
    urgent_risk_of_significant_harm: bool = False

    @model_validator(mode="after")
    def _order(self) -> StrategyDiscussionRequest:
        if self.respond_by < self.requested_at:
            raise ValueError("respond_by is before requested_at")
        return self


class StrategyDiscussionRequestV1(Envelope):
    event_type: Literal["social_care.strategy_discussion_request.v1"]
    payload: StrategyDiscussionRequest


class MissingFromCareKind(StrEnum):
    MISSING = "missing"  # not where they should be, whereabouts not known (SSDA903 M)
    AWAY = "away"  # away without authorisation, whereabouts known (SSDA903 A)


class MissingFromCare(Payload):
    """A looked-after child missing from care, or away from placement without authorisation."""

    kind: MissingFromCareKind
    started_on: date
    ended_on: date | None = Field(default=None, description="empty while the child is still missing or away")
    placing_authority_code: LaCode

    @model_validator(mode="after")
    def _order(self) -> MissingFromCare:
        if self.ended_on is not None and self.ended_on < self.started_on:
            raise ValueError("ended_on is before started_on")
        return self


class MissingFromCareV1(Envelope):
    event_type: Literal["social_care.missing_from_care.v1"]
    payload: MissingFromCare
