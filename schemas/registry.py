"""event_type -> model, and the one parser every entry point uses to validate events."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.envelope import Envelope
from schemas.events.nhs import UnscheduledCareAttendanceV1
from schemas.events.police import DomesticAbuseIncidentV1
from schemas.events.school import AttendanceConcernV1
from schemas.events.social_care import ChildProtectionPlanV1

MAX_EVENT_BYTES = 256 * 1024

EVENT_MODELS: dict[str, type[Envelope]] = {
    "police.domestic_abuse_incident.v1": DomesticAbuseIncidentV1,
    "nhs.unscheduled_care_attendance.v1": UnscheduledCareAttendanceV1,
    "school.attendance_concern.v1": AttendanceConcernV1,
    "social_care.child_protection_plan.v1": ChildProtectionPlanV1,
}

AnyEvent = Annotated[
    DomesticAbuseIncidentV1 | UnscheduledCareAttendanceV1 | AttendanceConcernV1 | ChildProtectionPlanV1,
    Field(discriminator="event_type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


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


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in EVENT_MODELS:
        parts = parts[1:]  # drop the discriminator tag pydantic puts first
    return ".".join(parts)


def problems_from(error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        code = err["type"]
        path = _field_path(err["loc"])
        message = err["msg"]
        if code in ("union_tag_invalid", "union_tag_not_found"):
            path = "event_type"
            message = (
                "unknown event type" if code == "union_tag_invalid" else "event_type is missing"
            )
            code = "unknown_event_type" if code == "union_tag_invalid" else "missing"
        elif code == "json_invalid":
            path, message = "$", "not valid JSON"
        elif code == "model_type" and not path:
            path, message = "$", "an event must be a JSON object"
        if code == "value_error":
            message = message.removeprefix("Value error, ")
        problems.append(Problem(field=path or "$", code=code, message=message))
    return problems


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
