"""Property: whatever a partner's file holds, a connector never crashes, and every event it
accepts is one the bus accepts (signed as the organisation, through the real ingest)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.ingest import ingest
from bus.provenance.registry import LocalSigners
from bus.pseudonymise.keyring import Keyring
from bus.topics import ingress_topic
from connectors.base import Context, Converted, FileRejected, Rejection
from connectors.inbound import CONNECTORS, connector_settings
from schemas.envelope import Agency
from schemas.identifiers import upn_check_letter

REPO = Path(__file__).parents[2]
NOW = datetime.fromisoformat("2026-11-26T06:00:00+00:00")
KEYRING = Keyring.generate()
CODES = ["/", "\\", "L", "N", "O", "I", "M", "G", "U", "X", "#", "B", "ZZ", ""]


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> LocalSigners:
    local = LocalSigners(tmp_path_factory.mktemp("signers"))
    local.issue_publisher(Agency.SCHOOL, "900001")
    local.issue_publisher(Agency.POLICE, "NSP")
    return local


def _upn(n: int) -> str:
    base = f"999{n:09d}"
    return upn_check_letter(base) + base


marks = st.lists(st.fixed_dictionaries({
    "date": st.dates(date(2026, 9, 1), date(2026, 11, 20)).map(date.isoformat) | st.sampled_from(["", "31/02/2026"]),
    "session": st.sampled_from(["AM", "PM", "am", ""]),
    "code": st.sampled_from(CODES)}), min_size=0, max_size=60)
pupils = st.lists(st.fixed_dictionaries({
    "upn": st.integers(0, 10**6).map(_upn) | st.sampled_from(["", "BAD"]),
    "given_name": st.sampled_from(["Testa", "", "X" * 60]), "family_name": st.sampled_from(["Synthwood", ""]),
    "date_of_birth": st.sampled_from(["2015-05-06", "2030-01-01", "not a date"]), "marks": marks}),
    min_size=1, max_size=4)


def _accepted_by_the_bus(event: dict[str, Any], signers: LocalSigners) -> None:
    raw = json.dumps(signers.sign(event)).encode()
    out = ingest(raw, KEYRING, signers.registry(), topic=ingress_topic(event["source"]["agency"]), partition=0,
                 offset=1, timestamp_ms=1)
    assert out.dead_letter is None, out.dead_letter


def _check(name: str, org: str, doc: Any, tmp_path: Path, signers: LocalSigners) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    ctx = Context(org_id=org, now=NOW, settings=connector_settings(name, REPO / "policies" / "data"))
    try:
        results = list(CONNECTORS[name]().convert(path, ctx))
    except FileRejected:
        return
    for result in results:
        assert isinstance(result, Converted | Rejection)
        if isinstance(result, Converted):
            _accepted_by_the_bus(result.event, signers)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pupils=pupils)
def test_school_sessions_never_crash_and_emit_only_what_the_bus_accepts(pupils: list[dict[str, Any]],
                                                                        tmp_path: Path, signers: LocalSigners) -> None:
    _check("school-sessions", "900001", {"school_urn": "900001", "la_code": "N01", "pupils": pupils}, tmp_path,
           signers)


people = st.lists(st.fixed_dictionaries({
    "type": st.just("person"), "id": st.sampled_from(["p1", "p2", "p3"]),
    "attributes": st.fixed_dictionaries({
        "role": st.sampled_from(["CHILD", "VICTIM", "", "ALIEN"]),
        "personId": st.sampled_from(["NSP/700101", "bad id", ""]),
        "givenName": st.sampled_from(["Kayden", ["Kay", "Den"], ""]), "familyName": st.sampled_from(["Testbury", ""]),
        "dateOfBirth": st.sampled_from(["2017-02-14", "2001-01-01", "soon"]),
        "schoolUrn": st.sampled_from(["900001", "12", ""]),
        "childPresent": st.sampled_from([True, False, "yes"]),
        "childLocation": st.sampled_from(["SAME_ROOM", "NOT_PRESENT", "MAYBE"]), "spokenTo": st.booleans(),
        "voiceOfChild": st.sampled_from(["", "Said it was loud.", "x" * 3000])})}), max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=people, domestic=st.booleans(), risk=st.sampled_from(["HIGH", "MEDIUM", "NONE"]),
       at=st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)).map(lambda d: d.isoformat()))
def test_encompass_never_crashes_and_emits_only_what_the_bus_accepts(
        people: list[dict[str, Any]], domestic: bool, risk: str, at: str, tmp_path: Path,
        signers: LocalSigners) -> None:
    doc = {"data": {"type": "incident", "id": "i1", "attributes": {
        "reference": "NSP-2026000001", "occurredAt": at, "locationType": "HOME", "domesticAbuse": domestic,
        "riskGrade": risk, "circumstances": "Neighbour reported shouting."},
        "relationships": {"persons": {"data": [{"type": "person", "id": p["id"]} for p in people]}}},
        "included": people}
    _check("encompass", "NSP", doc, tmp_path, signers)


def test_the_property_is_not_vacuous(tmp_path: Path, signers: LocalSigners) -> None:
    """The golden files do produce events that pass, so the properties above can see a failure."""
    start = date(2026, 9, 7)
    sessions = [{"date": (start + timedelta(days=d)).isoformat(), "session": s, "code": "N"}
                for d in range(10) for s in ("AM", "PM")]
    doc = {"school_urn": "900001", "la_code": "N01", "pupils": [
        {"upn": _upn(5), "given_name": "Testa", "family_name": "Synthwood", "date_of_birth": "2015-05-06",
         "marks": sessions}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    ctx = Context(org_id="900001", now=NOW, settings=connector_settings("school-sessions", REPO / "policies" / "data"))
    converted = [r for r in CONNECTORS["school-sessions"]().convert(path, ctx) if isinstance(r, Converted)]
    assert len(converted) == 1
    _accepted_by_the_bus(converted[0].event, signers)
