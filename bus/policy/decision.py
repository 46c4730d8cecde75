"""The decision OPA returns for one (event, recipient), as a typed model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Demographics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    dob: str = "drop"
    postcode: str = "drop"
    name: str = "drop"


class Decision(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    event_id: str
    recipient: str
    allow: bool
    agreement: str | None = None
    lawful_basis: list[str] = Field(default_factory=list)
    purpose: str
    fields: list[str] = Field(default_factory=list)
    identifiers: dict[str, str] = Field(default_factory=dict)
    demographics: Demographics = Field(default_factory=Demographics)
    retention_days: int = 0
    override: bool = False
    reasons: list[str] = Field(min_length=1)
    revision: str

    def shares_field(self, name: str) -> bool:
        return "*" in self.fields or name in self.fields
