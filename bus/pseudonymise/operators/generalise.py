"""`generalise`: date of birth to year-month, postcode to district."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from bus.exceptions import ConfigurationError
from bus.pseudonymise.operators.base import Operator, OperatorContext
from schemas.identifiers import postcode_district

LEVELS = {"dob": {"year_month"}, "postcode": {"district"}}


def generalise_dob(value: str, mode: str) -> str | None:
    if mode == "full":
        return value
    if mode == "year_month":
        return date.fromisoformat(value).strftime("%Y-%m")
    return None


def generalise_postcode(value: str, mode: str) -> str | None:
    if mode == "full":
        return value
    if mode == "district":
        return postcode_district(value)
    return None


class GeneraliseOperator(Operator):
    name = "generalise"
    params = frozenset({"level"})

    def validate(self, params: Mapping[str, str]) -> None:
        super().validate(params)
        if not any(params.get("level") in levels for levels in LEVELS.values()):
            raise ConfigurationError(f"generalise: unknown level {params.get('level')!r}")

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        level = params["level"]
        if ctx.kind == "dob" and level in LEVELS["dob"]:
            return generalise_dob(str(value), level)
        if ctx.kind == "postcode" and level in LEVELS["postcode"]:
            return generalise_postcode(str(value), level)
        return None  # a level that does not fit the field shares nothing
