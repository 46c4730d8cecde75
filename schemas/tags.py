"""Personal-data tags carried in field metadata, read by the pseudonymiser and redactor."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel

TAG_KEY = "x-personal-data"
KIND_KEY = "x-demographic"


class PersonalData(StrEnum):
    IDENTIFIER = "identifier"
    DEMOGRAPHIC = "demographic"
    FREE_TEXT = "free_text"


class Demographic(StrEnum):
    NAME = "name"
    DOB = "dob"
    POSTCODE = "postcode"


def tag(kind: PersonalData, demographic: Demographic | None = None) -> dict[str, Any]:
    """json_schema_extra for a personal-data field (also exported in the JSON Schema)."""
    extra: dict[str, Any] = {TAG_KEY: kind.value}
    if demographic is not None:
        extra[KIND_KEY] = demographic.value
    return extra


def tagged_fields(model: type[BaseModel], kind: PersonalData) -> dict[str, dict[str, Any]]:
    """Field name -> metadata, for every field of `model` tagged with `kind`."""
    found: dict[str, dict[str, Any]] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(TAG_KEY) == kind.value:
            found[name] = dict(extra)
    return found
