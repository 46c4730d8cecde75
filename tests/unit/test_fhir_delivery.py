"""Outbound FHIR: NHS partners receive CP-IS status as a CareTeam and attendances as an
Encounter, valid R4 (read back by fhir.resources), carrying only what the view carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careteam import CareTeam

from connectors.delivery.base import Rejected
from connectors.delivery.fhir import NHS_NUMBER, SNOMED, FhirSink, NoFhirForm, to_fhir


def _view(event_type: str, payload: dict[str, Any], subject: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"event_id": "7b0c6f5e-8e1d-4c1a-9d55-2f4b1c1e9a01", "event_type": event_type,
            "source": {"agency": "social_care", "org_id": "N01"}, "occurred_at": "2026-11-20T10:00:00+00:00",
            "recorded_at": "2026-11-20T10:05:00+00:00", "classification": "OFFICIAL-SENSITIVE",
            "recipient": "northshire-nhs-uec",
            "subject": subject or {"identifiers": {"nhs_number": "9990000018"}, "given_name": "Testa",
                                   "family_name": "Synthwood", "date_of_birth": "2016-03-04"},
            "payload": payload,
            "sharing": {"agreement": "DSA-CPIS-001", "override": False, "lawful_basis": "x", "purpose": "cp-is",
                        "policy_revision": "r1", "retention_days": 30, "delivered_at": "2026-11-20T10:06:00+00:00"}}


CPP = {"action": "start", "plan_start": "2026-11-18", "category": "neglect", "local_authority_code": "N01",
       "team_name": "Northshire Safeguarding Team", "team_contact": "01632 960000"}


def test_a_child_protection_plan_is_a_cpis_careteam() -> None:
    team = CareTeam.model_validate(to_fhir(_view("social_care.child_protection_plan.v1", CPP)))
    assert team.status == "active"
    assert (team.category[0].coding[0].system, team.category[0].coding[0].code) == (SNOMED, "342191000000101")
    assert team.subject.identifier.system == NHS_NUMBER and team.subject.identifier.value == "9990000018"
    assert str(team.period.start) == "2026-11-18" and team.period.end is None
    assert team.telecom[0].value == "01632 960000" and team.name == "Northshire Safeguarding Team"


def test_an_ended_plan_is_inactive_with_its_end_date_and_an_unborn_childs_plan_has_its_own_code() -> None:
    ended = to_fhir(_view("social_care.child_protection_plan.v1", {**CPP, "action": "end", "plan_end": "2026-11-25"},
                          subject={"identifiers": {"la_child_id": "N01-100001"}, "family_name": "Synthwood",
                                   "expected_delivery_date": "2027-02-01"}))
    assert ended["status"] == "inactive" and ended["period"]["end"] == "2026-11-25"
    assert ended["category"][0]["coding"][0]["code"] == "818901000000100"


def test_a_looked_after_status_is_a_careteam_with_the_lac_code() -> None:
    lac = to_fhir(_view("social_care.looked_after_status.v1", {
        "action": "start", "legal_status": "C2", "period_start": "2026-10-01", "placing_authority_code": "N01",
        "placement_type": "foster_care"}))
    assert lac["category"][0]["coding"][0]["code"] == "764841000000100"


def test_an_attendance_is_an_emergency_encounter_with_its_patient() -> None:
    view = _view("nhs.unscheduled_care_attendance.v1", {
        "care_setting_ods": "RNX01", "care_setting_type": "emergency_department",
        "arrived_at": "2026-11-20T02:10:00+00:00", "attendance_category": "injury",
        "discharge_destination": "home", "responsible_la_code": "N01"},
        subject={"identifiers": {"nhs_number": "psn:k1:ABCDEF"}, "date_of_birth": "2016-03"})
    bundle = Bundle.model_validate(to_fhir(view))
    encounter, patient = (e.resource for e in bundle.entry)
    assert encounter.class_fhir.code == "EMER" and encounter.status == "finished"
    assert encounter.hospitalization.dischargeDisposition.coding[0].code == "306689006"
    # a token stays a token: it is never presented as an NHS number
    assert patient.identifier[0].system.endswith("/Id/token/nhs_number")
    assert str(patient.birthDate) == "2016-03"


def test_an_event_with_no_fhir_form_is_rejected_not_sent_as_something_else() -> None:
    sent: list[bytes] = []

    class Inner:
        name = "file"

        def deliver(self, event_id: str, body: bytes) -> None:
            sent.append(body)

        def flush(self) -> None:
            pass

    sink = FhirSink(Inner())
    with pytest.raises(NoFhirForm):
        to_fhir(_view("school.dsl_concern.v1", {}))
    with pytest.raises(Rejected):
        sink.deliver("x", json.dumps(_view("school.dsl_concern.v1", {})).encode())
    sink.deliver("y", json.dumps(_view("social_care.child_protection_plan.v1", CPP)).encode())
    assert json.loads(sent[0])["resourceType"] == "CareTeam" and len(sent) == 1


def test_a_view_fhir_refuses_is_rejected_without_repeating_the_childs_data() -> None:
    class Inner:
        name = "file"

        def deliver(self, event_id: str, body: bytes) -> None:
            raise AssertionError("nothing is sent")

        def flush(self) -> None:
            pass

    view = _view("nhs.unscheduled_care_attendance.v1", {
        "care_setting_ods": "RNX01", "care_setting_type": "emergency_department",
        "arrived_at": "2026-11-20T02:10:00+00:00", "attendance_category": "injury",
        "discharge_destination": "home", "responsible_la_code": "N01"},
        subject={"identifiers": {"nhs_number": "9990000018"}, "given_name": "Markerina", "date_of_birth": "2016-13"})
    with pytest.raises(Rejected) as refused:
        FhirSink(Inner()).deliver("x", json.dumps(view).encode())
    assert "2016-13" not in str(refused.value) and "Markerina" not in str(refused.value)
    assert "ValidationError" in str(refused.value)
