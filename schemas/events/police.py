"""Police events: Operation Encompass, missing episodes, exploitation, arrests."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import Envelope
from schemas.events._base import Payload, PoliceReference, PostcodeDistrict, SchoolUrn, free_text
from schemas.identifiers import FreeText


class RiskGrade(StrEnum):
    STANDARD = "standard"
    MEDIUM = "medium"
    HIGH = "high"


class ChildLocation(StrEnum):
    SAME_ROOM = "same_room"
    ELSEWHERE_IN_PROPERTY = "elsewhere_in_property"
    NOT_PRESENT = "not_present"


class DomesticAbuseIncident(Payload):
    """A domestic abuse incident the child was exposed to (Operation Encompass), v1."""

    police_reference: PoliceReference
    incident_at: AwareDatetime
    location_type: Literal["home", "other_residence", "public_place", "other"]
    child_present: bool
    child_location: ChildLocation
    child_spoken_to: bool
    child_voice: FreeText | None = free_text("what the child said, in their words", required=False)
    circumstances: FreeText = free_text("brief circumstances of the incident")
    school_urn: SchoolUrn | None = None
    risk_grade: RiskGrade


class DomesticAbuseIncidentV1(Envelope):
    event_type: Literal["police.domestic_abuse_incident.v1"]
    payload: DomesticAbuseIncident


class ChildExposure(StrEnum):
    WITNESSED = "witnessed"
    HEARD = "heard"
    PRESENT_NOT_AWARE = "present_not_aware"
    NOT_PRESENT = "not_present"


class DomesticAbuseIncident2(Payload):
    """v2: `child_present` + `child_location` became one `child_exposure`, and the notice
    deadline (before the next school day) is explicit."""

    police_reference: PoliceReference
    incident_at: AwareDatetime
    location_type: Literal["home", "other_residence", "public_place", "other"]
    child_exposure: ChildExposure
    child_spoken_to: bool
    child_voice: FreeText | None = free_text("what the child said, in their words", required=False)
    circumstances: FreeText = free_text("brief circumstances of the incident")
    school_urn: SchoolUrn | None = None
    risk_grade: RiskGrade
    notify_school_by: AwareDatetime | None = Field(default=None, description="start of the next school day")


class DomesticAbuseIncidentV2(Envelope):
    event_type: Literal["police.domestic_abuse_incident.v2"]
    payload: DomesticAbuseIncident2


class MissingStatus(StrEnum):
    MISSING = "missing"
    FOUND = "found"
    RETURNED = "returned"


class MissingEpisode(Payload):
    """A child reported missing, and found or returned."""

    police_reference: PoliceReference
    reported_missing_at: AwareDatetime
    status: MissingStatus
    found_at: AwareDatetime | None = None
    risk_level: Literal["low", "medium", "high"]
    episodes_last_12_months: int = Field(ge=1, le=500)
    from_care_placement: bool
    found_location_type: Literal["home", "friend_or_relative", "public_place", "another_area",
                                 "address_of_concern", "unknown"] | None = None
    return_home_interview_required: bool
    circumstances: FreeText | None = free_text("circumstances of the episode", required=False)

    @model_validator(mode="after")
    def _found_time(self) -> MissingEpisode:
        if self.status is not MissingStatus.MISSING and self.found_at is None:
            raise ValueError("found_at is required once the child is found or returned")
        if self.found_at is not None and self.found_at < self.reported_missing_at:
            raise ValueError("found_at is before reported_missing_at")
        return self


class MissingEpisodeV1(Envelope):
    event_type: Literal["police.missing_episode.v1"]
    payload: MissingEpisode


class ExploitationType(StrEnum):
    CRIMINAL = "criminal_exploitation"
    SEXUAL = "sexual_exploitation"
    COUNTY_LINES = "county_lines"
    TRAFFICKING = "trafficking"
    ONLINE = "online_exploitation"
    RADICALISATION = "radicalisation"


class ExploitationConcern(Payload):
    """Intelligence or an incident indicating the child is being exploited."""

    police_reference: PoliceReference
    identified_at: AwareDatetime
    exploitation_types: list[ExploitationType] = Field(min_length=1, max_length=6)
    risk_level: Literal["low", "medium", "high"]
    nrm_referral_made: bool = Field(description="referred to the National Referral Mechanism")
    locations_of_concern: list[PostcodeDistrict] = Field(default_factory=list, max_length=20)
    associated_adults_count: int = Field(default=0, ge=0, le=100)
    summary: FreeText = free_text("summary of the concern")


class ExploitationConcernV1(Envelope):
    event_type: Literal["police.exploitation_concern.v1"]
    payload: ExploitationConcern


class OffenceCategory(StrEnum):
    VIOLENCE = "violence_against_the_person"
    ROBBERY = "robbery"
    THEFT = "theft"
    DRUGS = "drug_offences"
    WEAPONS = "possession_of_weapons"
    CRIMINAL_DAMAGE = "criminal_damage"
    PUBLIC_ORDER = "public_order"
    SEXUAL = "sexual_offences"
    OTHER = "other"


class ArrestOutcome(StrEnum):
    NO_FURTHER_ACTION = "no_further_action"
    RELEASED_UNDER_INVESTIGATION = "released_under_investigation"
    BAILED = "bailed"
    CHARGED = "charged"
    REMANDED = "remanded"
    OUT_OF_COURT_DISPOSAL = "out_of_court_disposal"


class ChildArrested(Payload):
    """A child was arrested (for youth justice and the local authority)."""

    police_reference: PoliceReference
    arrested_at: AwareDatetime
    offence_category: OffenceCategory
    custody_suite: str = Field(pattern=r"^[A-Z]{2,4}-[A-Z0-9]{2,8}$")
    appropriate_adult_requested: bool
    outcome: ArrestOutcome | None = None
    outcome_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _outcome_time(self) -> ChildArrested:
        if (self.outcome is None) != (self.outcome_at is None):
            raise ValueError("outcome and outcome_at go together")
        return self


class ChildArrestedV1(Envelope):
    event_type: Literal["police.child_arrested.v1"]
    payload: ChildArrested
