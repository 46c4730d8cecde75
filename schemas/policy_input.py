"""The input OPA receives: one batch of (event, recipient, purpose) requests. Exported as JSON
Schema so `opa check` can type-check the policies against it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PolicyEvent(BaseModel):
    """What policy may see of an event: no identifiers, no free text."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    event_id: str
    event_type: str
    agency: str
    org_id: str
    occurred_at: str
    attributes: dict[str, Any] = Field(description="payload fields that are not free text")
    urgent: bool = Field(default=False, description="urgent risk of significant harm declared")
    justification_recorded: bool = Field(default=False, description="the declaration carries a justification")
    override_role: str | None = Field(
        default=None, description="the registered role whose signed declaration the bus verified")


class PolicyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    event: PolicyEvent
    recipient: str
    purpose: str


class PolicyInput(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    today: str = Field(description="ISO date the agreements' validity is checked against")
    requests: list[PolicyRequest]
