"""The event catalogue: coverage per agency, versioning, age and pre-birth rules, exports, synth."""

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.envelope import Subject
from schemas.export import rendered_schemas
from schemas.identifiers import LaChildId, PolicePersonId
from schemas.registry import EVENT_MODELS, InvalidEvent, latest_type, parse_event, payload_model, read_as
from schemas.synthetic import Synth
from schemas.tags import TAG_KEY, PersonalData, tagged_fields

REPO = Path(__file__).parents[2]
ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)


def _fields(event: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps(event))
    return [p.field for p in info.value.problems]


def test_catalogue_has_at_least_four_types_per_agency_and_sixteen_in_all() -> None:
    per_agency = Counter(t.split(".")[0] for t in EVENT_MODELS if t.endswith(".v1"))
    # the bus raises one type of its own (the multi-agency concern); partners publish the rest
    assert per_agency.pop("bus") == 1
    assert set(per_agency) == {"police", "nhs", "school", "social_care"}
    assert all(n >= 4 for n in per_agency.values()), per_agency
    assert sum(per_agency.values()) >= 16


def test_committed_json_schemas_are_up_to_date() -> None:
    committed = {p.name: p.read_text() for p in (REPO / "schemas" / "json").glob("*.json")}
    assert committed == rendered_schemas(), "run `sgbus schemas export schemas/json` and commit"


def test_every_subject_personal_data_field_is_tagged() -> None:
    tagged = set(tagged_fields(Subject, PersonalData.DEMOGRAPHIC))
    assert tagged == {"given_name", "family_name", "date_of_birth", "postcode", "expected_delivery_date"}
    schema = json.dumps(rendered_schemas()["police.domestic_abuse_incident.v1.schema.json"])
    assert TAG_KEY in schema


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_free_text_fields_are_tagged_and_bounded(event_type: str) -> None:
    model = payload_model(event_type)
    properties = model.model_json_schema()["properties"]
    for name in tagged_fields(model, PersonalData.FREE_TEXT):
        branches = properties[name].get("anyOf", [properties[name]])
        strings = [b for b in branches if b.get("type") == "string"]
        assert strings and all(0 < b.get("maxLength", 10**9) <= 2000 for b in strings), name


def test_over_long_free_text_is_refused_naming_the_field() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.domestic_abuse_incident(s.child(min_age=5))
    e["payload"]["circumstances"] = "x" * 2001
    assert _fields(e) == ["payload.circumstances"]


def test_bad_upn_is_refused_naming_the_field() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.attendance_concern(s.child(min_age=6))
    upn = e["subject"]["identifiers"]["upn"]
    e["subject"]["identifiers"]["upn"] = ("B" if upn[0] != "B" else "C") + upn[1:]
    assert _fields(e) == ["subject.identifiers.upn"]


def test_subject_aged_18_is_refused_for_a_child_event() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.domestic_abuse_incident(s.child())
    e["subject"]["date_of_birth"] = (ANCHOR.date() - timedelta(days=18 * 366)).isoformat()
    assert _fields(e) == ["subject.date_of_birth"]


def test_care_leavers_up_to_25_are_accepted_for_looked_after_status_but_not_older() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.looked_after_status(s.child())
    e["subject"]["date_of_birth"] = (ANCHOR.date() - timedelta(days=22 * 366)).isoformat()
    assert parse_event(json.dumps(e)).event_type == "social_care.looked_after_status.v1"
    e["subject"]["date_of_birth"] = (ANCHOR.date() - timedelta(days=26 * 366)).isoformat()
    assert _fields(e) == ["subject.date_of_birth"]


def test_prebirth_event_needs_expected_delivery_date_not_date_of_birth() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.prebirth_concern()
    assert parse_event(json.dumps(e)).subject.expected_delivery_date is not None
    e["subject"].pop("expected_delivery_date")
    e["subject"]["date_of_birth"] = "2020-01-01"
    e["subject"]["given_name"] = "Ava"
    assert "subject.expected_delivery_date" in _fields(e)


def test_expected_delivery_date_is_refused_outside_prebirth_events() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.safeguarding_concern(s.child())
    e["subject"]["expected_delivery_date"] = (ANCHOR.date() + timedelta(days=30)).isoformat()
    e["subject"].pop("date_of_birth")
    assert _fields(e) == ["subject.expected_delivery_date"]


def test_payload_cross_field_rules_are_enforced() -> None:
    s = Synth(seed=1, now=ANCHOR)
    e = s.missing_episode(s.child())
    e["payload"]["status"] = "found"
    e["payload"]["found_at"] = None
    assert _fields(e) == ["payload"]


@pytest.mark.parametrize(("present", "location", "exposure"), [
    (True, "same_room", "witnessed"),
    (True, "elsewhere_in_property", "heard"),
    (False, "not_present", "not_present"),
])
def test_v1_domestic_abuse_incident_reads_as_v2(present: bool, location: str, exposure: str) -> None:
    s = Synth(seed=3, now=ANCHOR)
    e = s.domestic_abuse_incident(s.child(min_age=5), child_present=present)
    e["payload"]["child_location"] = location
    v2 = read_as(parse_event(json.dumps(e)), "police.domestic_abuse_incident.v2")
    assert v2.event_type == "police.domestic_abuse_incident.v2"
    assert v2.payload.child_exposure == exposure  # type: ignore[attr-defined]
    assert v2.payload.police_reference == e["payload"]["police_reference"]  # type: ignore[attr-defined]
    assert latest_type("police.domestic_abuse_incident.v1") == "police.domestic_abuse_incident.v2"


def test_reading_a_newer_version_as_an_older_one_is_refused() -> None:
    s = Synth(seed=3, now=ANCHOR)
    v2 = parse_event(json.dumps(s.domestic_abuse_incident_v2(s.child(min_age=5))))
    with pytest.raises(ValueError, match="cannot read"):
        read_as(v2, "police.domestic_abuse_incident.v1")


@pytest.mark.parametrize("value", ["N01-123456", "S01-ABCD", "999-0000000000000000"])
def test_valid_la_child_ids(value: str) -> None:
    assert TypeAdapter(LaChildId).validate_python(value) == value


@pytest.mark.parametrize("value", ["N01123456", "n01-1234", "N01-12", "N01-" + "1" * 17])
def test_invalid_la_child_ids(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(LaChildId).validate_python(value)


@pytest.mark.parametrize("value", ["NSP/1234", "MET/123456789012"])
def test_valid_police_person_ids(value: str) -> None:
    assert TypeAdapter(PolicePersonId).validate_python(value) == value


@pytest.mark.parametrize("value", ["NSP1234", "N/1234", "NSP/12", "nsp/1234"])
def test_invalid_police_person_ids(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(PolicePersonId).validate_python(value)


def test_synth_is_deterministic_per_seed_and_covers_every_type_validly() -> None:
    a = list(Synth(seed=8, now=ANCHOR).stream(400))
    assert a == list(Synth(seed=8, now=ANCHOR).stream(400))
    assert a != list(Synth(seed=9, now=ANCHOR).stream(400))
    # partners' types; the bus's own concern is built on its own (a stream never fakes one)
    assert {e["event_type"] for e in a} == {t for t in EVENT_MODELS if not t.startswith("bus.")}
    for e in [*a, Synth(seed=8, now=ANCHOR).event("bus.multi_agency_concern.v1")]:
        parse_event(json.dumps(e))


def test_synthetic_nhs_numbers_are_in_the_never_issued_999_range() -> None:
    for e in Synth(seed=4, now=ANCHOR).stream(200):
        nhs = e["subject"]["identifiers"].get("nhs_number")
        assert nhs is None or nhs.startswith("999")


def test_dates_relative_to_anchor_are_never_in_the_future() -> None:
    for e in Synth(seed=5).stream(200):
        assert datetime.fromisoformat(e["occurred_at"]) <= datetime.now(UTC)
        dob = e["subject"].get("date_of_birth")
        assert dob is None or date.fromisoformat(dob) <= date.today()


def test_partition_key_is_stable_per_child_and_reveals_no_identifier() -> None:
    s = Synth(seed=30, now=ANCHOR)
    child = s.child(min_age=5)
    a = parse_event(json.dumps(s.domestic_abuse_incident(child)))
    b = parse_event(json.dumps(s.child_protection_plan(child)))
    other = parse_event(json.dumps(s.child_protection_plan(s.child(min_age=5))))
    assert a.partition_key() == b.partition_key() != other.partition_key()
    assert child["identifiers"]["nhs_number"].encode() not in a.partition_key()
