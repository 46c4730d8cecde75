"""Shared pieces of payload models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.tags import PersonalData, tag


class Payload(BaseModel):
    """Base of every payload: closed (unknown fields are refused) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def free_text(description: str, *, required: bool = True) -> Any:
    """Field() of a bounded free-text field (FreeText), tagged for the redactor."""
    extra = tag(PersonalData.FREE_TEXT)
    if required:
        return Field(description=description, json_schema_extra=extra)
    return Field(default=None, description=description, json_schema_extra=extra)


PoliceReference = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,4}-[0-9]{4,12}$")]
SchoolUrn = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
LaCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{3}$")]
OdsCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{3,6}$")]
TeamName = Annotated[str, StringConstraints(min_length=1, max_length=120)]
PostcodeDistrict = Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")]
