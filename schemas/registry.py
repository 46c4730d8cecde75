"""event_type -> model, upcasters between versions, and the one parser every entry point uses."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.envelope import Envelope
from schemas.events import bus, nhs, police, school, social_care

MAX_EVENT_BYTES = 256 * 1024

_MODELS: list[type[Envelope]] = [
    police.DomesticAbuseIncidentV1, police.DomesticAbuseIncidentV2, police.MissingEpisodeV1,
    police.ExploitationConcernV1, police.ChildArrestedV1,
    nhs.UnscheduledCareAttendanceV1, nhs.SafeguardingConcernV1, nhs.PrebirthConcernV1, nhs.CamhsReferralStatusV1,
    school.AttendanceConcernV1, school.SuspensionOrExclusionV1, school.DslConcernV1, school.ElectiveHomeEducationV1,
    school.ChildMissingEducationV1,
    social_care.ChildProtectionPlanV1, social_care.LookedAfterStatusV1, social_care.ReferralOutcomeV1,
    social_care.StrategyDiscussionRequestV1, social_care.MissingFromCareV1,
    bus.MultiAgencyConcernV1,
]


def _type_name(model: type[Envelope]) -> str:
    annotation = model.model_fields["event_type"].annotation
    return str(annotation.__args__[0])  # type: ignore[union-attr]


EVENT_MODELS: dict[str, type[Envelope]] = {_type_name(m): m for m in _MODELS}

AnyEvent = Annotated[Union[tuple(_MODELS)], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)  # type: ignore[arg-type]


def base_type(event_type: str) -> str:
    """`police.domestic_abuse_incident.v2` -> `police.domestic_abuse_incident`."""
    return event_type.rsplit(".", 1)[0]


def version_of(event_type: str) -> int:
    return int(event_type.rsplit(".v", 1)[1])


def latest_type(event_type: str) -> str:
    base = base_type(event_type)
    return max((t for t in EVENT_MODELS if base_type(t) == base), key=version_of)


# -- upcasters: payload of version N -> payload of version N+1 ---------------------------------
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _dai_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k not in ("child_present", "child_location")}
    if not payload.get("child_present"):
        out["child_exposure"] = "not_present"
    elif payload.get("child_location") == "same_room":
        out["child_exposure"] = "witnessed"
    else:
        out["child_exposure"] = "heard"
    out["notify_school_by"] = None
    return out


UPCASTERS: dict[str, Upcaster] = {
    "police.domestic_abuse_incident.v1": _dai_v1_to_v2,
}


def read_as(event: Envelope, event_type: str) -> Envelope:
    """Read `event` as the later version `event_type`, applying upcasters one step at a time."""
    if base_type(event.event_type) != base_type(event_type) or version_of(event_type) < version_of(event.event_type):
        raise ValueError(f"cannot read {event.event_type} as {event_type}")
    data = event.model_dump(mode="json")
    current = event.event_type
    while current != event_type:
        data["payload"] = UPCASTERS[current](data["payload"])
        current = f"{base_type(current)}.v{version_of(current) + 1}"
        data["event_type"] = current
    return parse_event_dict(data)


# -- parsing ----------------------------------------------------------------------------------
class Problem(BaseModel):
    """One reason an event is invalid; never contains the offending value."""

    field: str
    code: str
    message: str


class InvalidEvent(ValueError):
    """Raised by `parse_event`; `problems` names every failing field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


def payload_model(event_type: str) -> type[BaseModel]:
    return EVENT_MODELS[event_type].model_fields["payload"].annotation  # type: ignore[return-value]


_OWN_NAME = re.compile(r"^(?:[a-z_][a-z0-9_]{0,63}|\d{1,6})$")
UNKNOWN = "<unknown>"


def _field_path(loc: tuple[int | str, ...], code: str = "") -> str:
    """The dotted path of a failing field. A key the publisher made up (an unknown field, or
    anything not shaped like our own snake_case names) is shown as `<unknown>`: such a key can
    be a name or a note, and dead letters and logs must never echo it."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in EVENT_MODELS:
        parts = parts[1:]  # drop the discriminator tag pydantic puts first
    if code == "extra_forbidden" and parts:
        parts[-1] = UNKNOWN
    return ".".join(p if _OWN_NAME.match(p) else UNKNOWN for p in parts)


#: problems an invalid event's dead letter (or the gateway's answer) lists, and how long a field
#: path or message may be: a 256 KiB event with tens of thousands of made-up keys made a dead
#: letter of megabytes, over Kafka's message limit, whose failed send stopped ingest for everyone
MAX_PROBLEMS = 20
MAX_PROBLEM_TEXT = 200


def capped(problems: list[Problem]) -> list[Problem]:
    """At most MAX_PROBLEMS distinct (field, code) problems, each shortened, and a last one
    saying how many more there were."""
    seen: set[tuple[str, str]] = set()
    kept: list[Problem] = []
    more = 0
    for p in problems:
        if p.code == "more_problems" and p.field == "$":  # capped once already: keep its count
            count = p.message.split(" ", 1)[0]
            more += int(count) if count.isdigit() else 1
            continue
        key = (p.field, p.code)
        if key in seen:
            continue
        seen.add(key)
        if len(kept) < MAX_PROBLEMS:
            kept.append(Problem(field=_short(p.field), code=_short(p.code), message=_short(p.message)))
        else:
            more += 1
    if more:
        kept.append(Problem(field="$", code="more_problems", message=f"{more} more problems not listed"))
    return kept


def _short(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_TEXT else text[:MAX_PROBLEM_TEXT - 1] + "…"


def problems_from(error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        code = err["type"]
        path = _field_path(err["loc"], code)
        message = err["msg"]
        if code in ("union_tag_invalid", "union_tag_not_found"):
            path = "event_type"
            message = "unknown event type" if code == "union_tag_invalid" else "event_type is missing"
            code = "unknown_event_type" if code == "union_tag_invalid" else "missing"
        elif code == "json_invalid":
            path, message = "$", "not valid JSON"
        elif code == "model_type" and not path:
            path, message = "$", "an event must be a JSON object"
        if code == "value_error":
            message = message.removeprefix("Value error, ")
            if message.startswith("@") and ": " in message:  # see envelope.field_error
                sub, message = message[1:].split(": ", 1)
                path = f"{path}.{sub}" if path else sub
        if code == "uuid_parsing":  # pydantic's message quotes a character and the length of the input
            message = "Input should be a valid UUID"
        problems.append(Problem(field=path or "$", code=code, message=message))
    return capped(problems)


def parse_event(raw: bytes | str) -> Envelope:
    """Validate one event (JSON) and return its typed model, or raise InvalidEvent."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent([Problem(field="$", code="too_large",
                                    message=f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")])
    try:
        event: Envelope = _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(problems_from(exc)) from None
    return event


def parse_event_dict(data: dict[str, Any]) -> Envelope:
    try:
        event: Envelope = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise InvalidEvent(problems_from(exc)) from None
    return event


def event_json_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()
