"""`keep`, `drop` and `redact` operators."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.pseudonymise.operators.base import Operator, OperatorContext
from bus.redaction import redact


class KeepOperator(Operator):
    name = "keep"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return value


class DropOperator(Operator):
    name = "drop"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return None


class RedactOperator(Operator):
    """Free text: the subject's names and any identifier, phone, email or postcode become placeholders."""

    name = "redact"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return None if value is None else redact(str(value), ctx.names)
