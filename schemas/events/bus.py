"""Events the bus itself raises: the multi-agency concern (the whole picture of a child, no free text)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from schemas.envelope import Agency, Envelope
from schemas.events._base import Payload

RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{2,60}$")]
BaseEventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]+\.[a-z_]+$")]


class TypeCount(Payload):
    """How often one kind of event was reported about the child within the window."""

    event_type: BaseEventType = Field(description="the event type without its version, e.g. police.missing_episode")
    agency: Agency
    count: int = Field(ge=1, le=10_000)
    first_at: AwareDatetime
    last_at: AwareDatetime


class MultiAgencyConcern(Payload):
    """A child crossed one of the partnership's multi-agency concern thresholds (policies/data/concern.yaml).
    Counts and dates only: what each agency said stays with the agency and its own shares."""

    rule: RuleId = Field(description="the threshold crossed (its id in the partnership's concern rules)")
    window_days: int = Field(ge=1, le=730)
    agencies: list[Agency] = Field(min_length=1, max_length=10, description="agencies that reported")
    reports: list[TypeCount] = Field(min_length=1, max_length=50)
    events_in_window: int = Field(ge=1, le=100_000)
    first_at: AwareDatetime
    last_at: AwareDatetime
    #: 1 for the first crossing; counts up each time the picture changes materially afterwards
    raised: int = Field(ge=1, le=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> MultiAgencyConcern:
        if self.last_at < self.first_at:
            raise ValueError("last_at is before first_at")
        if sorted({r.agency for r in self.reports}) != sorted(set(self.agencies)):
            raise ValueError("agencies must be exactly the agencies of the reports")
        if sum(r.count for r in self.reports) != self.events_in_window:
            raise ValueError("events_in_window must be the sum of the reports' counts")
        return self


class MultiAgencyConcernV1(Envelope):
    #: the bus raises these about children of any age it holds a picture for
    max_age_years: ClassVar[int] = 25
    event_type: Literal["bus.multi_agency_concern.v1"]
    payload: MultiAgencyConcern
