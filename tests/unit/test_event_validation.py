import json
from typing import Any

import pytest

from schemas.registry import MAX_EVENT_BYTES, InvalidEvent, parse_event
from schemas.synthetic import Synth


@pytest.fixture
def event() -> dict[str, Any]:
    s = Synth(seed=7)
    return s.domestic_abuse_incident(s.child())


def _problems(data: dict[str, Any] | bytes) -> list[tuple[str, str]]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return [(p.field, p.code) for p in info.value.problems]


def test_every_demo_event_is_valid() -> None:
    for e in Synth(seed=3).demo_set():
        assert parse_event(json.dumps(e)).event_type == e["event_type"]


def test_invalid_nhs_number_names_the_field(event: dict[str, Any]) -> None:
    event["subject"]["identifiers"]["nhs_number"] = "9434765918"
    assert ("subject.identifiers.nhs_number", "value_error") in _problems(event)


def test_unknown_event_type_is_named(event: dict[str, Any]) -> None:
    event["event_type"] = "police.unicorn_sighting.v1"
    assert _problems(event) == [("event_type", "unknown_event_type")]


def test_future_occurred_at_is_refused(event: dict[str, Any]) -> None:
    event["occurred_at"] = "2999-01-01T00:00:00+00:00"
    assert ("occurred_at", "value_error") in _problems(event)


def test_missing_payload_field_is_named(event: dict[str, Any]) -> None:
    del event["payload"]["risk_grade"]
    assert ("payload.risk_grade", "missing") in _problems(event)


def test_oversized_event_is_refused_before_parsing(event: dict[str, Any]) -> None:
    event["payload"]["circumstances"] = "x" * (MAX_EVENT_BYTES + 1)
    assert _problems(event) == [("$", "too_large")]


def test_source_agency_must_match_event_type(event: dict[str, Any]) -> None:
    event["source"]["agency"] = "nhs"
    assert ("source", "value_error") in _problems(event)


def test_subject_without_identifier_or_name_and_dob_is_refused(event: dict[str, Any]) -> None:
    event["subject"] = {"identifiers": {}, "given_name": "Ava"}
    assert ("subject", "value_error") in _problems(event)


def test_not_json_is_refused() -> None:
    assert _problems(b"{not json") == [("$", "json_invalid")]


def test_problem_messages_never_echo_the_rejected_value(event: dict[str, Any]) -> None:
    event["subject"]["identifiers"]["nhs_number"] = "9434765918"
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps(event))
    assert "9434765918" not in str(info.value)
    assert all("9434765918" not in p.message for p in info.value.problems)


def test_an_unknown_field_is_reported_without_echoing_its_name() -> None:
    """Issue 13: dead letters echoed publisher-supplied key names, which can carry a name."""
    from schemas.registry import InvalidEvent, parse_event_dict
    from schemas.synthetic import Synth

    s = Synth(seed=3)
    event = s.domestic_abuse_incident(s.child(5, 9))
    event["payload"]["Jane Smith, 1 Acacia Avenue"] = "x"
    event["subject"]["Mother: Ann Smith"] = "y"
    try:
        parse_event_dict(event)
    except InvalidEvent as exc:
        fields = {p.field for p in exc.problems}
        said = str(exc) + repr([p.message for p in exc.problems])
    else:
        raise AssertionError("unknown fields must be rejected")
    assert {"payload.<unknown>", "subject.<unknown>"} <= fields
    assert "Smith" not in said and "Acacia" not in said
