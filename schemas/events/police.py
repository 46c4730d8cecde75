"""Police events: Operation Encompass domestic abuse notifications."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.envelope import Envelope
from schemas.identifiers import FreeText
from schemas.tags import PersonalData, tag


class RiskGrade(StrEnum):
    STANDARD = "standard"
    MEDIUM = "medium"
    HIGH = "high"


class ChildLocation(StrEnum):
    SAME_ROOM = "same_room"
    ELSEWHERE_IN_PROPERTY = "elsewhere_in_property"
    NOT_PRESENT = "not_present"


class DomesticAbuseIncident(BaseModel):
    """A domestic abuse incident the child was exposed to (Operation Encompass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    police_reference: str = Field(pattern=r"^[A-Z]{2,4}-[0-9]{4,12}$")
    incident_at: AwareDatetime
    location_type: Literal["home", "other_residence", "public_place", "other"]
    child_present: bool
    child_location: ChildLocation
    child_spoken_to: bool
    child_voice: FreeText | None = Field(default=None, json_schema_extra=tag(PersonalData.FREE_TEXT))
    circumstances: FreeText = Field(json_schema_extra=tag(PersonalData.FREE_TEXT))
    school_urn: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    risk_grade: RiskGrade


class DomesticAbuseIncidentV1(Envelope):
    event_type: Literal["police.domestic_abuse_incident.v1"]
    payload: DomesticAbuseIncident
