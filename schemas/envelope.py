"""The envelope every event shares: who, when, about which child, and how classified."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.identifiers import LaChildId, NhsNumber, OrgId, PersonName, PolicePersonId, Postcode, Upn
from schemas.tags import Demographic, PersonalData, tag

CLOCK_SKEW = timedelta(minutes=5)


class Agency(StrEnum):
    POLICE = "police"
    NHS = "nhs"
    SCHOOL = "school"
    SOCIAL_CARE = "social_care"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    agency: Agency
    org_id: OrgId = Field(description="the publishing organisation's code (ODS, URN, force, LA)")


class SubjectIdentifiers(Strict):
    nhs_number: NhsNumber | None = Field(default=None, json_schema_extra=tag(PersonalData.IDENTIFIER))
    upn: Upn | None = Field(default=None, json_schema_extra=tag(PersonalData.IDENTIFIER))
    la_child_id: LaChildId | None = Field(default=None, json_schema_extra=tag(PersonalData.IDENTIFIER))
    police_person_id: PolicePersonId | None = Field(
        default=None, json_schema_extra=tag(PersonalData.IDENTIFIER)
    )

    def present(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Subject(Strict):
    """The child the event is about."""

    identifiers: SubjectIdentifiers = Field(default_factory=SubjectIdentifiers)
    given_name: PersonName | None = Field(
        default=None, json_schema_extra=tag(PersonalData.DEMOGRAPHIC, Demographic.NAME)
    )
    family_name: PersonName | None = Field(
        default=None, json_schema_extra=tag(PersonalData.DEMOGRAPHIC, Demographic.NAME)
    )
    date_of_birth: date | None = Field(
        default=None, json_schema_extra=tag(PersonalData.DEMOGRAPHIC, Demographic.DOB)
    )
    postcode: Postcode | None = Field(
        default=None, json_schema_extra=tag(PersonalData.DEMOGRAPHIC, Demographic.POSTCODE)
    )

    @model_validator(mode="after")
    def _identifiable(self) -> Subject:
        has_name = self.given_name is not None and self.family_name is not None
        if not self.identifiers.present() and not (has_name and self.date_of_birth is not None):
            raise ValueError("the subject needs at least one identifier, or a name and date of birth")
        return self


class Envelope(Strict):
    """Fields common to every event type; subclasses fix `event_type` and `payload`."""

    event_id: UUID
    event_type: str
    source: Source
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    subject: Subject
    classification: Literal["OFFICIAL-SENSITIVE"] = "OFFICIAL-SENSITIVE"
    signature: str | None = Field(default=None, max_length=200)

    @field_validator("source")
    @classmethod
    def _source_matches_type(cls, source: Source, info: ValidationInfo) -> Source:
        event_type = info.data.get("event_type")
        if isinstance(event_type, str):
            agency = event_type.split(".", 1)[0]
            if agency != source.agency.value:
                raise ValueError(f"source.agency must be {agency} for {event_type}")
        return source

    @field_validator("occurred_at", "recorded_at")
    @classmethod
    def _not_in_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + CLOCK_SKEW:
            raise ValueError("is in the future")
        return value
