"""Children's social care events: child protection plans (shared with NHS through CP-IS)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.envelope import Envelope


class AbuseCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    MULTIPLE = "multiple"


class ChildProtectionPlan(BaseModel):
    """A child protection plan started or ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["start", "end"]
    plan_start: date
    plan_end: date | None = None
    category: AbuseCategory
    local_authority_code: str = Field(pattern=r"^[A-Z0-9]{3}$")
    team_name: str = Field(min_length=1, max_length=120)
    team_contact: str = Field(
        pattern=r"^\+?[0-9 ]{10,16}$", description="the team's duty line, not a person's number"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChildProtectionPlan:
        if self.action == "end" and self.plan_end is None:
            raise ValueError("plan_end is required when action is end")
        if self.plan_end is not None and self.plan_end < self.plan_start:
            raise ValueError("plan_end is before plan_start")
        return self


class ChildProtectionPlanV1(Envelope):
    event_type: Literal["social_care.child_protection_plan.v1"]
    payload: ChildProtectionPlan
