"""The envelope every event shares: who, when, about which child, and how classified."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal
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
    #: the bus itself, for what it raises (bus.multi_agency_concern)
    BUS = "bus"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


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
        # Attribute reads, not model_dump(): run by every subject's validator, on every event.
        return {k: v for k in type(self).model_fields if (v := getattr(self, k)) is not None}


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
    expected_delivery_date: date | None = Field(
        default=None, description="for an unborn child (pre-birth events) instead of date_of_birth",
        json_schema_extra=tag(PersonalData.DEMOGRAPHIC, Demographic.DOB),
    )

    @model_validator(mode="after")
    def _identifiable(self) -> Subject:
        has_name = self.given_name is not None and self.family_name is not None
        unborn = self.expected_delivery_date is not None and (
            self.family_name is not None or self.identifiers.la_child_id is not None
        )
        if not self.identifiers.present() and not (has_name and self.date_of_birth is not None) and not unborn:
            raise ValueError("the subject needs at least one identifier, or a name and date of birth")
        if self.date_of_birth is not None and self.expected_delivery_date is not None:
            raise field_error("expected_delivery_date", "give date_of_birth or expected_delivery_date, not both")
        return self


def field_error(path: str, message: str) -> ValueError:
    """A validation error that names a field below the one being validated (see registry)."""
    return ValueError(f"@{path}: {message}")


def age_on(dob: date, day: date) -> int:
    return day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))


class Urgency(Strict):
    """A declared urgent risk of significant harm; policy may widen sharing, only with a justification."""

    urgent_risk_of_significant_harm: Literal[True]
    justification: str = Field(min_length=20, max_length=1000, json_schema_extra=tag(PersonalData.FREE_TEXT))
    declared_by_role: str = Field(min_length=2, max_length=80, description="e.g. duty inspector, MASH manager")
    declaration: str | None = Field(
        default=None, max_length=200,
        description="detached EdDSA JWS by a key registered to declared_by_role (README: Provenance and integrity)",
    )


class Envelope(Strict):
    """Fields common to every event type; subclasses fix `event_type` and `payload`."""

    #: oldest subject this event type may be about (care-leaver events allow up to 25)
    max_age_years: ClassVar[int] = 18
    #: pre-birth events are about an unborn child: expected_delivery_date, no date_of_birth
    prebirth: ClassVar[bool] = False

    event_id: UUID
    event_type: str
    source: Source
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    subject: Subject
    classification: Literal["OFFICIAL-SENSITIVE"] = "OFFICIAL-SENSITIVE"
    urgency: Urgency | None = None
    nonce: str | None = Field(
        default=None, min_length=22, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",  # 22: 128 bits, base64url
        description="random (128 bits or more, base64url), set by the signer; covered by the signature, never "
                    "delivered, so a view's content digest cannot be used to test guesses of what it omits",
    )
    signature: str | None = Field(
        default=None, max_length=200,
        description="detached EdDSA JWS by the source organisation's registered key; required at ingest",
    )

    def partition_key(self) -> bytes:
        """Kafka key for the ingress topics: the same for every event about one child, so a
        child's events stay in order from the first hop. Used only in the short-retention
        ingress topics (whose values hold the identifiers anyway); never a pseudonym."""
        ids = self.subject.identifiers.present()
        born = self.subject.date_of_birth or self.subject.expected_delivery_date
        basis = next((f"{k}:{ids[k]}" for k in ("nhs_number", "la_child_id", "upn", "police_person_id") if k in ids),
                     f"name:{self.subject.family_name}:{born}")
        return hashlib.sha256(basis.encode()).hexdigest()[:32].encode()

    @field_validator("source")
    @classmethod
    def _source_matches_type(cls, source: Source, info: ValidationInfo) -> Source:
        event_type = info.data.get("event_type")
        if isinstance(event_type, str):
            agency = event_type.split(".", 1)[0]
            if agency != source.agency.value:
                raise ValueError(f"source.agency must be {agency} for {event_type}")
        return source

    @field_validator("subject")
    @classmethod
    def _subject_fits_event_type(cls, subject: Subject, info: ValidationInfo) -> Subject:
        occurred = info.data.get("occurred_at")
        if cls.prebirth:
            if subject.expected_delivery_date is None:
                raise field_error("expected_delivery_date", "a pre-birth event needs the expected date of delivery")
            if subject.date_of_birth is not None:
                raise field_error("date_of_birth", "a pre-birth event is about an unborn child")
        elif subject.expected_delivery_date is not None:
            raise field_error("expected_delivery_date", "only pre-birth events have an expected date of delivery")
        if subject.date_of_birth is not None and isinstance(occurred, datetime):
            day = occurred.date()
            if subject.date_of_birth > day:
                raise field_error("date_of_birth", "is after occurred_at")
            if age_on(subject.date_of_birth, day) >= cls.max_age_years:
                raise field_error("date_of_birth", f"the subject must be under {cls.max_age_years} at occurred_at")
        return subject

    @field_validator("occurred_at", "recorded_at")
    @classmethod
    def _not_in_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + CLOCK_SKEW:
            raise ValueError("is in the future")
        return value
