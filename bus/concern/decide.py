"""The answer of data.sgbus.concern.decisions, bound to the question (a malformed answer fails closed)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from bus.exceptions import PolicyUnavailable


class ConcernDecision(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    key: StrictStr
    rule: StrictStr
    crossed: StrictBool
    #: named `raise` in Rego
    raise_: StrictBool
    reasons: list[StrictStr]


def bind_concern_decisions(children: list[dict[str, Any]], rule_ids: list[str],
                           answer: object) -> list[ConcernDecision]:
    """One decision per (child asked about, rule in force), none about anyone else: otherwise the
    whole answer is refused (PolicyUnavailable), as for sharing decisions."""
    if not isinstance(answer, list):
        raise PolicyUnavailable("OPA returned no concern decisions")
    try:
        decisions = [ConcernDecision.model_validate({**d, "raise_": d.get("raise")}) for d in answer
                     if isinstance(d, dict)]
    except ValidationError:
        raise PolicyUnavailable("OPA returned a malformed concern decision") from None
    asked = {(c["key"], r) for c in children for r in rule_ids}
    got = [(d.key, d.rule) for d in decisions]
    if len(decisions) != len(answer) or sorted(got) != sorted(asked):
        raise PolicyUnavailable("OPA's concern decisions do not answer the children and rules asked about")
    return decisions
