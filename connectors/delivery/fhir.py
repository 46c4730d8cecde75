"""Deliveries as FHIR R4 for NHS partners: a CP-IS status (child protection plan, looked-after
status) as a CareTeam, in the shape of the CP-IS FHIR API; an unscheduled care attendance as
an Encounter with its Patient. Each resource is built with `fhir.resources` (R4B models, which
read and write R4 for these resources), so what is sent is valid FHIR.

Extensions and identifier systems that have no national definition use this project's own
namespace (BASE) and are listed in the README."""

from __future__ import annotations

import json
from typing import Any

from bus.exceptions import SgbusError
from connectors.codes import table

SNOMED = "http://snomed.info/sct"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
BASE = "https://sgbus.example.org/fhir"
#: a partner-domain token in place of an identifier the agreement does not reveal
TOKEN_SYSTEM = f"{BASE}/Id/token"
RESPONSIBLE_LA = f"{BASE}/StructureDefinition/responsible-local-authority"
CARE_SETTING = f"{BASE}/CodeSystem/ecds-emergency-care-department-type"
SHARING = f"{BASE}/CodeSystem/sharing-agreement"
LOCAL_IDS = {"la_child_id": f"{BASE}/Id/la-child-id", "upn": f"{BASE}/Id/upn",
             "police_person_id": f"{BASE}/Id/police-person-id"}


class NoFhirForm(SgbusError):
    """This event type has no FHIR form here (the partner's delivery should stay JSON)."""


def _identifiers(view: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for kind, value in (view.get("subject", {}).get("identifiers") or {}).items():
        if str(value).startswith("psn:"):
            out.append({"system": f"{TOKEN_SYSTEM}/{kind}", "value": value})
        elif kind == "nhs_number":
            out.append({"system": NHS_NUMBER, "value": value})
        else:
            out.append({"system": LOCAL_IDS.get(kind, f"{BASE}/Id/{kind}"), "value": value})
    return out


def _meta(view: dict[str, Any]) -> dict[str, Any]:
    sharing = view.get("sharing") or {}
    return {"tag": [{"system": SHARING, "code": sharing.get("agreement", "unknown"),
                     "display": f"shared under {sharing.get('agreement')} for {sharing.get('purpose')}"}],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R",
                          "display": "restricted"}]}


def _patient(view: dict[str, Any]) -> dict[str, Any]:
    s = view.get("subject") or {}
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "subject", "identifier": _identifiers(view)}
    if s.get("given_name") or s.get("family_name"):
        patient["name"] = [{k: v for k, v in (("family", s.get("family_name")),
                                              ("given", [s["given_name"]] if s.get("given_name") else None)) if v}]
    dob = s.get("date_of_birth")
    if dob:
        patient["birthDate"] = dob
    if s.get("postcode"):
        patient["address"] = [{"postalCode": s["postcode"]}]
    return patient


def _subject_reference(view: dict[str, Any]) -> dict[str, Any]:
    ids = _identifiers(view)
    nhs = [i for i in ids if i["system"] == NHS_NUMBER]
    return {"identifier": (nhs or ids)[0]} if ids else {"display": "the child"}


def care_team(view: dict[str, Any]) -> dict[str, Any]:
    """CP-IS: the plan as the CP-IS FHIR API returns it (CareTeam.category, period, name, telecom)."""
    p = view["payload"]
    if view["event_type"].startswith("social_care.child_protection_plan."):
        unborn = bool((view.get("subject") or {}).get("expected_delivery_date"))
        plan = "unborn_child_protection_plan" if unborn else "child_protection_plan"
        start, end, name = p["plan_start"], p.get("plan_end"), p.get("team_name")
        telecom = [{"system": "phone", "value": p["team_contact"], "use": "work"}] if p.get("team_contact") else []
        authority = p.get("local_authority_code")
    else:
        plan, start, end = "looked_after", p["period_start"], p.get("period_end")
        authority, telecom = p.get("placing_authority_code"), []
        name = f"Local authority {authority}"
    code = table("fhir", "cpis_plan_category")[plan]
    resource: dict[str, Any] = {
        "resourceType": "CareTeam", "id": view["event_id"], "meta": _meta(view),
        "status": "inactive" if end else "active",
        "category": [{"coding": [{"system": SNOMED, "code": code,
                                  "display": table("fhir", "cpis_plan_display")[code]}]}],
        "subject": _subject_reference(view),
        "period": {k: v for k, v in (("start", start), ("end", end)) if v},
        "name": name, "telecom": telecom,
        "managingOrganization": [{"identifier": {"system": ODS, "value": authority}}] if authority else [],
    }
    return _valid("CareTeam", {k: v for k, v in resource.items() if v not in ([], None)})


def attendance(view: dict[str, Any]) -> dict[str, Any]:
    """An unscheduled care attendance: a Bundle (collection) of the Encounter and its Patient."""
    p = view["payload"]
    encounter: dict[str, Any] = {
        "resourceType": "Encounter", "id": view["event_id"], "meta": _meta(view),
        "status": "finished" if p.get("discharge_destination") else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"},
        "type": [{"coding": [{"system": CARE_SETTING, "code": table("fhir", "care_setting_type_out")[
            p["care_setting_type"]], "display": p["care_setting_type"]}]}],
        "subject": {"reference": "Patient/subject"},
        "period": {"start": p["arrived_at"]},
        "serviceProvider": {"identifier": {"system": ODS, "value": p["care_setting_ods"]}},
        "extension": [{"url": RESPONSIBLE_LA, "valueIdentifier": {"system": ODS, "value": p["responsible_la_code"]}}],
    }
    if p.get("discharge_destination"):
        code = table("fhir", "discharge_destination_out")[p["discharge_destination"]]
        encounter["hospitalization"] = {"dischargeDisposition": {"coding": [{"system": SNOMED, "code": code}]}}
    bundle = {"resourceType": "Bundle", "id": view["event_id"], "type": "collection", "meta": _meta(view),
              "entry": [{"fullUrl": f"urn:uuid:{view['event_id']}", "resource": encounter},
                        {"fullUrl": "Patient/subject", "resource": _patient(view)}]}
    return _valid("Bundle", bundle)


FORMATTERS = {
    "social_care.child_protection_plan": care_team,
    "social_care.looked_after_status": care_team,
    "nhs.unscheduled_care_attendance": attendance,
}


def to_fhir(view: dict[str, Any]) -> dict[str, Any]:
    formatter = FORMATTERS.get(view["event_type"].rsplit(".", 1)[0])
    if formatter is None:
        raise NoFhirForm(f"no FHIR form for {view['event_type']}")
    return formatter(view)


def _valid(resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as `fhir.resources` reads it back (refuses anything that is not valid FHIR)."""
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(resource_type).model_validate(resource)
    out: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True))
    return out


class FhirSink:
    """Wraps a sink (webhook, file drop) so the partner receives FHIR JSON; an event type with
    no FHIR form is rejected to sg.dlq, never sent in another shape."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"{inner.name}-fhir"

    def deliver(self, event_id: str, body: bytes) -> None:
        from connectors.delivery.base import Rejected

        try:
            resource = to_fhir(json.loads(body))
        except NoFhirForm as exc:
            raise Rejected(str(exc)) from None
        except Exception as exc:
            # fhir.resources' errors quote what they refused (a child's date of birth, a whole
            # Patient): the dead letter and the log get the error's type only.
            raise Rejected(f"no valid FHIR form for this event ({type(exc).__name__})") from None
        self.inner.deliver(event_id, json.dumps(resource).encode())

    def flush(self) -> None:
        self.inner.flush()
