"""Partnership data (partners, subscriptions, agreements) from YAML, validated with file:line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bus.concern.rules import Concern
from bus.encompass import SchoolCalendar
from bus.exceptions import PolicyDataError
from schemas.envelope import Agency
from schemas.registry import EVENT_MODELS, base_type, payload_model

PartnerId = str
_ID = r"^[a-z0-9][a-z0-9-]{1,48}$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Delivery(Model):
    kind: Literal["topic"] = "topic"
    collected_by: Literal["mailbox", "connector", "kafka"] = Field(
        default="mailbox",
        description="how the partner takes its topic: the gateway's mailbox (watched for lag by the gateway), "
                    "a delivery connector (`sgbus deliver`, which reports its own lag) or its own Kafka consumer")


class Partner(Model):
    id: PartnerId = Field(pattern=_ID)
    name: str
    agency: Agency
    org_id: str = Field(description="the code this partner's events carry in source.org_id")
    area: str
    linkage_domain: str = Field(pattern=_ID)
    delivery: Delivery = Field(default_factory=Delivery)
    dfe_laestab: str | None = Field(
        default=None, pattern=r"^\d{7}$",
        description="a school's DfE LA and establishment number (LAESTAB): what its Common Transfer Files "
                    "name as their source school")

    @property
    def topic(self) -> str:
        return f"sg.deliver.{self.id}"


class Subscription(Model):
    partner: PartnerId
    event_types: list[str] = Field(min_length=1)
    purpose: str = Field(pattern=_ID)


class IdentifierMode(StrEnum):
    REVEAL = "reveal"
    TOKEN = "token"  # noqa: S105 - an identifier mode, not a password
    DROP = "drop"


class Condition(Model):
    """One condition: an event attribute equals a value, or names the recipient's org."""

    attribute: str | None = None
    equals: bool | str | int | None = None
    recipient_org_matches: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        attribute_form = self.attribute is not None and self.equals is not None
        org_form = self.recipient_org_matches is not None and self.attribute is None and self.equals is None
        if attribute_form == org_form or (attribute_form and self.recipient_org_matches is not None):
            raise ValueError("give either attribute + equals, or recipient_org_matches (not parts of both)")
        return self


class Demographics(Model):
    dob: Literal["full", "year_month", "drop"] = "drop"
    postcode: Literal["full", "district", "drop"] = "drop"
    name: Literal["full", "drop"] = "drop"


class Agreement(Model):
    id: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,40}$")
    title: str
    providers: list[PartnerId] = Field(min_length=1)
    recipients: list[PartnerId] = Field(min_length=1)
    event_types: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)
    lawful_basis: list[str] = Field(min_length=1)
    fields: list[str] = Field(description="payload fields the recipient may receive (not free text: see free_text)")
    free_text: dict[str, Literal["reveal", "redact", "drop"]] = Field(
        default_factory=dict,
        description="per free-text field: reveal (the sealed original), redact (the redacted copy) or drop "
                    "(the default for any free-text field not named)")
    identifiers: dict[Literal["nhs_number", "upn", "la_child_id", "police_person_id"], IdentifierMode] = (
        Field(default_factory=dict)
    )
    demographics: Demographics = Field(default_factory=Demographics)
    conditions: list[Condition] = Field(default_factory=list)
    areas: list[str] | None = Field(default=None, description="recipient's area must be one of these")
    valid_from: date
    valid_to: date | None = None
    retention_days: int = Field(ge=1, le=36500)
    publisher_may_know_recipients: bool = Field(
        default=False, description="the publisher's event status (gateway) may name who received it under "
                                   "this agreement; otherwise it gives only how many partners did")


class Emergency(Model):
    """The emergency override: what police and social care receive on an urgent risk of harm."""

    id: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,40}$")
    title: str
    recipient_agencies: list[Agency] = Field(min_length=1)
    #: the subscriptions' purposes it widens (an agency alone takes in, say, youth justice)
    recipient_purposes: list[str] = Field(min_length=1)
    same_area_only: bool = True
    lawful_basis: list[str] = Field(min_length=1)
    identifiers: dict[Literal["nhs_number", "upn", "la_child_id", "police_person_id"], IdentifierMode] = (
        Field(default_factory=dict)
    )
    demographics: Demographics = Field(default_factory=Demographics)
    retention_days: int = Field(ge=1, le=36500)
    declarer_roles: list[str] = Field(
        min_length=1, description="roles whose signed declaration (a key registered to the role) can invoke it")
    free_text: Literal["drop", "redact", "reveal"] = Field(
        default="drop", description="what an override releases of the event's free text (the agreement's own "
                                    "choice stands where it has one)")


@dataclass(frozen=True)
class RedactPlan:
    """Which free-text fields of an event type ingest redacts (Partnership.redact_fields)."""

    every: bool
    fields: dict[str, frozenset[str]]

    def __call__(self, event_type: str) -> frozenset[str] | None:
        return None if self.every else self.fields.get(event_type, frozenset())


class Partnership(Model):
    partners: list[Partner]
    subscriptions: list[Subscription]
    agreements: list[Agreement]
    emergency: Emergency | None = None
    school_calendar: SchoolCalendar = Field(default_factory=SchoolCalendar)
    concern: Concern | None = None

    @cached_property
    def _partner_index(self) -> dict[str, Partner]:
        return {p.id: p for p in self.partners}

    def redact_fields(self, event_type: str) -> frozenset[str] | None:
        """The free-text fields of `event_type` some decision could ask the redacted copy of
        (an agreement's `redact`); None: every one (an emergency section that redacts)."""
        return self.redact_plan(event_type)

    @cached_property
    def redact_plan(self) -> RedactPlan:
        """`redact_fields` as plain data, which ingest's own process is handed with each batch."""
        return RedactPlan(self.emergency is not None and self.emergency.free_text == "redact", self._redact_index)

    @cached_property
    def _redact_index(self) -> dict[str, frozenset[str]]:
        index: dict[str, set[str]] = {}
        for a in self.agreements:
            wanted = {f for f, mode in a.free_text.items() if mode == "redact"}
            for event_type in a.event_types if wanted else ():
                index.setdefault(event_type, set()).update(wanted)
        return {k: frozenset(v) for k, v in index.items()}

    def partner(self, partner_id: str) -> Partner | None:
        # Called for every allowed decision; ids are unique (validated on load).
        return self._partner_index.get(partner_id)

    def partner_for_source(self, agency: str, org_id: str) -> Partner | None:
        # Called for every event routed: a lookup rather than a scan of the partners.
        return self._source_index.get((str(agency), org_id))

    @cached_property
    def _source_index(self) -> dict[tuple[str, str], Partner]:
        index: dict[tuple[str, str], Partner] = {}
        for p in self.partners:
            index.setdefault((str(p.agency), p.org_id), p)  # the first listed, as a scan found
        return index

    def as_opa_data(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["agreements"] = sorted(data["agreements"], key=lambda a: a["id"])
        return data


FILES = ("partners", "subscriptions", "agreements")
OPTIONAL_FILES = ("emergency", "school_calendar", "concern")


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def load_partnership(data_dir: Path) -> Partnership:
    """Read partners.yaml, subscriptions.yaml and agreements.yaml; raise PolicyDataError listing
    every problem as `file:line: field: message`."""
    raw: dict[str, Any] = {}
    nodes: dict[str, yaml.Node | None] = {}
    problems: list[str] = []
    for name in FILES + OPTIONAL_FILES:
        path = data_dir / f"{name}.yaml"
        if not path.is_file():
            if name in FILES:
                problems.append(f"{path}: missing file")
            continue
        text = path.read_text()
        try:
            nodes[name] = yaml.compose(text)
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problems.append(f"{where}: not valid YAML ({getattr(exc, 'problem', 'parse error')})")
            continue
        if not isinstance(loaded, dict) or name not in loaded:
            problems.append(f"{path}:1: expected a top-level key '{name}:'")
            continue
        raw[name] = loaded[name]
    if problems:
        raise PolicyDataError("\n".join(problems))
    try:
        partnership = Partnership.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            loc = err["loc"]
            file = str(loc[0])
            line = _line_of(nodes.get(file), loc)
            field = ".".join(str(p) for p in loc)
            problems.append(f"{data_dir / (file + '.yaml')}:{line}: {field}: {err['msg']}")
        raise PolicyDataError("\n".join(problems)) from None
    problems = _cross_check(partnership, data_dir, nodes)
    if problems:
        raise PolicyDataError("\n".join(problems))
    return partnership


def _cross_check(p: Partnership, data_dir: Path, nodes: dict[str, yaml.Node | None]) -> list[str]:
    problems = []
    ids = {x.id for x in p.partners}

    def where(file: str, *loc: int | str) -> str:
        return f"{data_dir / (file + '.yaml')}:{_line_of(nodes.get(file), (file, *loc))}"

    seen: set[str] = set()
    sources: dict[tuple[str, str], str] = {}
    for i, partner in enumerate(p.partners):
        if partner.id in seen:
            problems.append(f"{where('partners', i, 'id')}: id: duplicate partner id {partner.id}")
        seen.add(partner.id)
        # One organisation, one partner: policy treats every partner with a source's (agency,
        # org_id) as that source, and a copy made by mistake would receive what the first does.
        source = (partner.agency.value, partner.org_id)
        if source in sources:
            problems.append(f"{where('partners', i, 'org_id')}: org_id: {partner.org_id} ({partner.agency.value}) is "
                            f"already partner {sources[source]}'s")
        sources.setdefault(source, partner.id)
        if partner.linkage_domain == "controller":  # bus.pseudonymise.keyring.CONTROLLER_DOMAIN
            # The bus's own tokens (sg.events, the audit store): a partner given them could link
            # everything it receives to the bus's records.
            problems.append(f"{where('partners', i, 'linkage_domain')}: linkage_domain: controller is the bus's own "
                            "domain, never a partner's")
    subscribed: dict[tuple[str, str], str] = {}
    for i, sub in enumerate(p.subscriptions):
        if sub.partner not in ids:
            problems.append(f"{where('subscriptions', i, 'partner')}: partner: unknown partner {sub.partner}")
        for j, et in enumerate(sub.event_types):
            if et not in EVENT_MODELS:
                problems.append(f"{where('subscriptions', i, 'event_types', j)}: event_types: unknown event type {et}")
            # Policy is asked once per partner and event, with one purpose: a second subscription
            # would be ignored (and could take the override from the first, listed before it).
            if (sub.partner, et) in subscribed:
                problems.append(f"{where('subscriptions', i, 'event_types', j)}: event_types: {sub.partner} already "
                                f"subscribes to {et} (for {subscribed[sub.partner, et]}); one subscription per "
                                "partner and event type")
            subscribed.setdefault((sub.partner, et), sub.purpose)
    if p.emergency is not None:
        agencies = set(p.emergency.recipient_agencies)
        purposes = {s.purpose for s in p.subscriptions
                    if (x := p.partner(s.partner)) is not None and x.agency in agencies}
        for j, purpose in enumerate(p.emergency.recipient_purposes):
            if purpose not in purposes:
                problems.append(f"{where('emergency', 'recipient_purposes', j)}: recipient_purposes: "
                                f"{purpose} is no subscription purpose of a partner of recipient_agencies (a typo "
                                "would switch the override off)")
    agreement_ids: set[str] = set()
    for i, ag in enumerate(p.agreements):
        if ag.id in agreement_ids:
            problems.append(f"{where('agreements', i, 'id')}: id: duplicate agreement id {ag.id}")
        agreement_ids.add(ag.id)
        for key in ("providers", "recipients"):
            for j, pid in enumerate(getattr(ag, key)):
                if pid not in ids:
                    problems.append(f"{where('agreements', i, key, j)}: {key}: unknown partner {pid}")
        known: set[str] = set()
        free: set[str] = set()
        for j, et in enumerate(ag.event_types):
            if et not in EVENT_MODELS:
                problems.append(
                    f"{where('agreements', i, 'event_types', j)}: event_types: unknown event type {et}"
                )
            else:
                known |= set(payload_model(et).model_fields)
                free |= set(catalogue()[et]["free_text"])
        for k, field in enumerate(ag.fields):
            if known and field not in known:
                problems.append(
                    f"{where('agreements', i, 'fields', k)}: fields: {field} is not a payload field "
                    "of the agreement's event types"
                )
            elif field in free:
                problems.append(
                    f"{where('agreements', i, 'fields', k)}: fields: {field} is free text: give its mode under "
                    "free_text (reveal, redact or drop) instead"
                )
        for field in ag.free_text:
            if known and field not in free:
                problems.append(
                    f"{where('agreements', i, 'free_text', field)}: free_text: {field} is not a free-text field "
                    "of the agreement's event types"
                )
        if ag.valid_to is not None and ag.valid_to < ag.valid_from:
            problems.append(f"{where('agreements', i, 'valid_to')}: valid_to: before valid_from")
    if p.concern is not None:
        domains = {x.linkage_domain for x in p.partners}
        if p.concern.linkage_domain not in domains:
            problems.append(f"{where('concern', 'linkage_domain')}: linkage_domain: no partner is in "
                            f"{p.concern.linkage_domain}")
        bases = {base_type(t) for t in EVENT_MODELS}
        for i, rule in enumerate(p.concern.rules):
            for event_type in rule.require:
                if event_type not in bases:
                    problems.append(f"{where('concern', 'rules', i, 'require', event_type)}: require: unknown "
                                    f"event type {event_type} (name it without its version)")
    return problems


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, list[str]]]:
    """Every event type's payload fields and which are free text (data.sgbus.catalogue)."""
    from schemas.tags import PersonalData, tagged_fields

    return {et: {"fields": sorted(payload_model(et).model_fields),
                 "free_text": sorted(tagged_fields(payload_model(et), PersonalData.FREE_TEXT))}
            for et in sorted(EVENT_MODELS)}
