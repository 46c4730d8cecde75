"""`keep` and `drop` operators. (Free text is redacted once per event at ingest, by
bus/redaction, not per recipient.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.pseudonymise.operators.base import Operator, OperatorContext


class KeepOperator(Operator):
    name = "keep"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return value


class DropOperator(Operator):
    name = "drop"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return None
