"""The decision OPA returns for one (event, recipient), as a strict typed model, and the check
that binds each decision to the request it answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from bus.exceptions import PolicyUnavailable
from bus.policy.data import Demographics  # the agreements' own modes: a decision can ask for no other

IdentifierMode = Literal["reveal", "token", "drop"]
FreeTextMode = Literal["reveal", "redact"]  # drop: the field is not named


class Decision(BaseModel):
    # Strict: `allow: "yes"`, `allow: 1` or an unknown identifier mode is a malformed answer,
    # never coerced into a share.
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True, strict=True)

    event_id: StrictStr
    recipient: StrictStr
    allow: StrictBool
    agreement: StrictStr | None = None
    lawful_basis: list[StrictStr] = Field(default_factory=list)
    purpose: StrictStr
    fields: list[StrictStr] = Field(default_factory=list)
    free_text: dict[StrictStr, FreeTextMode] = Field(default_factory=dict)
    identifiers: dict[StrictStr, IdentifierMode] = Field(default_factory=dict)
    demographics: Demographics = Field(default_factory=Demographics)
    retention_days: StrictInt = Field(default=0, ge=0)
    override: StrictBool = False
    reasons: list[StrictStr] = Field(min_length=1)
    revision: StrictStr

    def shares_field(self, name: str) -> bool:
        """A payload field that is not free text (free text: `free_text` only)."""
        return name in self.fields


def bind_decisions(requests: list[dict[str, Any]], answer: object) -> list[Decision]:
    """One strict decision per request, in order, each naming that request's event, recipient
    and purpose. Anything else (a missing or extra entry, a decision for another event or
    recipient, a wildcard, a malformed field) fails the whole batch closed: PolicyUnavailable,
    so nothing is shared and the batch is retried. Messages give positions, never values."""
    if not isinstance(answer, list) or len(answer) != len(requests):
        raise PolicyUnavailable("OPA answered without exactly one decision per request (policy not loaded?)")
    decisions = []
    for i, (request, raw) in enumerate(zip(requests, answer, strict=True)):
        try:
            decision = Decision.model_validate(raw)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            raise PolicyUnavailable(f"OPA returned a malformed decision at position {i} ({', '.join(fields)})") \
                from None
        expected = (request["event"]["event_id"], request["recipient"], request["purpose"])
        if (decision.event_id, decision.recipient, decision.purpose) != expected:
            raise PolicyUnavailable(f"OPA's decision at position {i} answers another request "
                                    "(event, recipient or purpose differ)")
        if decision.allow and not decision.agreement:
            # Every share is under an agreement (the audit names it; the partner's key domain too).
            raise PolicyUnavailable(f"OPA's decision at position {i} allows a share under no agreement")
        decisions.append(decision)
    return decisions
