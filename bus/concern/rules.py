"""The partnership's multi-agency concern thresholds (policies/data/concern.yaml), as data Rego decides with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConcernRule(Model):
    """A threshold: at least `min_agencies` agencies and/or at least N events of each type in
    `require`, within `window_days` of now."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,60}$")
    title: str = Field(min_length=3, max_length=160)
    window_days: int = Field(ge=1, le=730)
    min_agencies: int | None = Field(default=None, ge=1, le=10)
    #: base event type (no version, e.g. police.missing_episode) -> at least this many events
    require: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_count(self) -> ConcernRule:
        if self.min_agencies is None and not self.require:
            raise ValueError("a rule needs min_agencies or require (or both)")
        for event_type, n in self.require.items():
            if n < 1:
                raise ValueError(f"require.{event_type}: at least 1")
        return self


class MaterialChange(Model):
    """When a child already raised for a rule is raised again (defined by the partnership)."""

    new_agency: bool = True
    new_event_type: bool = True
    #: this many more events in the window than at the last raise (None: never for that alone)
    more_events: int | None = Field(default=3, ge=1, le=1000)


class Concern(Model):
    #: whose tokens key the pictures: the MASH's linkage domain (its partners see equal tokens)
    linkage_domain: str = Field(min_length=1, max_length=40)
    rules: list[ConcernRule] = Field(min_length=1, max_length=50)
    material_change: MaterialChange = Field(default_factory=MaterialChange)

    @property
    def window_days(self) -> int:
        """How long the picture keeps an event: the longest rule window."""
        return max(r.window_days for r in self.rules)

    @model_validator(mode="after")
    def _unique_ids(self) -> Concern:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return self
