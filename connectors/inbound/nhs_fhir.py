"""`nhs-fhir`: FHIR R4 from NHS systems, JSON or XML, read with `fhir.resources` (R4B models).

- A searchset (or collection) Bundle of UK Core Encounter (class EMER) with its Patient:
  `nhs.unscheduled_care_attendance` from an NHS organisation (--org of an nhs partner).
- A CP-IS searchset of CareTeam (category 342191000000101 child protection plan, 818901000000100
  unborn child protection plan): `social_care.child_protection_plan` from the responsible local
  authority (--org of a social care partner). CP-IS does not carry the category of abuse, so a
  CareTeam needs this project's `category-of-abuse` extension; a looked-after CareTeam
  (764841000000100) carries no legal status or placement and is refused: looked-after status
  comes from the SSDA903 connector.

Codes are matched by system and code, extensions by URL (connectors/mappings/fhir.yaml)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from connectors.base import Connector, Context, FileRejected, RecordError, code, envelope, start_of
from connectors.codes import table
from connectors.delivery.fhir import BASE, NHS_NUMBER, RESPONSIBLE_LA, SNOMED
from schemas.envelope import Agency

NAME = "nhs-fhir"
CATEGORY_OF_ABUSE = f"{BASE}/StructureDefinition/category-of-abuse"
ATTENDANCE_REASON = f"{BASE}/StructureDefinition/attendance-reason"
DISCHARGE_STATUS = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EmergencyCareDischargeStatus"
CARE_SETTING_SYSTEMS = (f"{BASE}/CodeSystem/ecds-emergency-care-department-type",
                        "https://fhir.sgbus.invalid/CodeSystem/ecds-emergency-care-department-type")
LA_EXTENSIONS = (RESPONSIBLE_LA, "https://fhir.sgbus.invalid/StructureDefinition/responsible-local-authority")


def _read(path: Path) -> Any:
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"<"):
            return Bundle.model_validate_xml(data)
        return Bundle.model_validate_json(data)
    except ValidationError as exc:  # the location could name a key from the file: only the kind of error
        raise FileRejected(f"not a FHIR R4 Bundle ({exc.errors()[0]['type']})") from None
    except Exception as exc:  # lxml or JSON syntax errors
        raise FileRejected(f"not a FHIR R4 Bundle ({type(exc).__name__})") from None


def _coding(concept: Any, systems: tuple[str, ...]) -> str | None:
    for coding in (getattr(concept, "coding", None) or []):
        if coding.system in systems and coding.code:
            return str(coding.code)
    return None


def _extension(resource: Any, urls: tuple[str, ...]) -> Any:
    return next((e for e in (resource.extension or []) if e.url in urls), None)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, date | datetime) else (str(value) if value else None)


class NhsFhir(Connector):
    name = NAME
    agency = Agency.NHS
    agencies = (Agency.NHS, Agency.SOCIAL_CARE)
    summary = "FHIR R4 Bundles (JSON/XML): ED Encounter + Patient -> attendance; CP-IS CareTeam -> CP plan"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        bundle = _read(path)
        entries = [e.resource for e in (bundle.entry or []) if e.resource is not None]
        by_ref = {f"{r.get_resource_type()}/{r.id}": r for r in entries if r.id}
        main = [r for r in entries if r.get_resource_type() in ("Encounter", "CareTeam")]
        if not main:
            raise FileRejected("no Encounter or CareTeam in the Bundle")
        for number, resource in enumerate(main, start=1):
            yield f"{resource.get_resource_type()} {number}", (resource, by_ref)

    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        resource, by_ref = record
        if resource.get_resource_type() == "Encounter":
            return [self._attendance(resource, by_ref, ctx)]
        return [self._plan(resource, ctx)]

    def _attendance(self, enc: Any, by_ref: dict[str, Any], ctx: Context) -> dict[str, Any]:
        if ctx.settings.get("agency") not in (None, Agency.NHS.value):
            raise RecordError("Encounter", "an attendance is published by the NHS organisation, not this --org",
                              "wrong_publisher")
        if enc.class_fhir is None or enc.class_fhir.code != "EMER":
            raise RecordError("Encounter.class", "not an emergency attendance (EMER)", "not_emergency")
        patient = by_ref.get(enc.subject.reference) if enc.subject and enc.subject.reference else None
        if patient is None or patient.get_resource_type() != "Patient":
            raise RecordError("Encounter.subject", "no Patient for this reference in the Bundle", "dangling_reference")
        arrived = enc.period.start if enc.period else None
        if arrived is None:
            raise RecordError("Encounter.period.start", "is required (arrival)", "missing")
        ods = enc.serviceProvider.identifier.value if enc.serviceProvider and enc.serviceProvider.identifier else None
        if not ods or not str(ods).startswith(ctx.org_id):  # the trust's own sites only (RNX01 is a site of RNX)
            raise RecordError("Encounter.serviceProvider", "is not a site of --org", "wrong_provider")
        location = next((by_ref.get(loc.location.reference) for loc in (enc.location or [])
                         if loc.location and loc.location.reference), None)
        setting = None
        if location is not None:
            types = getattr(location, "type", None) or []  # a reference may point at another kind of resource
            setting = next((c for t in types if (c := _coding(t, CARE_SETTING_SYSTEMS))), None)
        care_setting = code(table("fhir", "care_setting_type"), setting, "Location.type (ECDS department type)")
        la_ext = _extension(enc, LA_EXTENSIONS)
        la = None
        if la_ext is not None:
            ident = la_ext.valueIdentifier or (la_ext.valueReference.identifier if la_ext.valueReference else None)
            la = ident.value if ident else None
        if not la:
            raise RecordError("Encounter.extension(responsible-local-authority)", "is required", "missing")
        discharge = None
        disposition = enc.hospitalization.dischargeDisposition if enc.hospitalization else None
        if disposition is not None:
            discharge = table("fhir", "discharge_destination").get(_coding(disposition, (SNOMED,)) or "")
        status = _extension(enc, (DISCHARGE_STATUS,))
        if status is not None:
            discharge = table("fhir", "discharge_status").get(_coding(status.valueCodeableConcept, (SNOMED,)) or "",
                                                              discharge)
        reason_ext = _extension(enc, (ATTENDANCE_REASON,))
        reason = reason_ext.valueCode if reason_ext is not None else "other"
        subject = _subject(patient)
        if not enc.id and not enc.identifier:
            raise RecordError("Encounter.id", "is required (with identifier, it makes the event id)", "missing")
        arrived_at = arrived if isinstance(arrived, datetime) else start_of(arrived)
        return envelope(
            connector=NAME, key=("Encounter", *(i.value for i in (enc.identifier or [])[:1]), enc.id,
                                 subject["identifiers"].get("nhs_number"), arrived_at.isoformat()),
            event_type="nhs.unscheduled_care_attendance.v1", agency=Agency.NHS, ctx=ctx, subject=subject,
            occurred_at=arrived_at,
            payload={"care_setting_ods": ods, "care_setting_type": care_setting, "arrived_at": arrived_at.isoformat(),
                     "attendance_category": code(table("fhir", "attendance_reason"), reason,
                                                 "Encounter.extension(attendance-reason)"),
                     "discharge_destination": discharge, "responsible_la_code": la})

    def _plan(self, team: Any, ctx: Context) -> dict[str, Any]:
        if ctx.settings.get("agency") not in (None, Agency.SOCIAL_CARE.value):
            raise RecordError("CareTeam", "a CP-IS plan is published by the responsible local authority, not this "
                              "--org", "wrong_publisher")
        plan = next((c for cat in (team.category or []) if (c := _coding(cat, (SNOMED,)))), None)
        kinds = {v: k for k, v in table("fhir", "cpis_plan_category").items()}
        kind = kinds.get(plan or "")
        if kind is None:
            raise RecordError("CareTeam.category", "not a CP-IS plan category", "unknown_code")
        if kind == "looked_after":
            raise RecordError("CareTeam.category", "CP-IS carries no legal status or placement for a looked-after "
                              "child; publish it from the ssda903 connector", "not_mappable")
        category = _extension(team, (CATEGORY_OF_ABUSE,))
        abuse = code(table("fhir", "abuse_category"), category.valueCode if category is not None else None,
                     "CareTeam.extension(category-of-abuse)")
        start = team.period.start if team.period else None
        if start is None:
            raise RecordError("CareTeam.period.start", "is required", "missing")
        end = team.period.end
        authorities = {o.identifier.value for o in (team.managingOrganization or []) if o.identifier}
        la = ctx.org_id
        if authorities - {ctx.org_id}:  # an authority publishes its own plans only
            raise RecordError("CareTeam.managingOrganization", "is another authority, not --org", "wrong_authority")
        contact = next((t.value for t in (team.telecom or []) if t.system == "phone" and t.use == "work"), None)
        ident = team.subject.identifier if team.subject else None
        if ident is None or ident.system != NHS_NUMBER:
            raise RecordError("CareTeam.subject.identifier", "needs the child's (or mother's) NHS number", "missing")
        subject: dict[str, Any] = {"identifiers": {"nhs_number": ident.value}}
        if kind == "unborn_child_protection_plan":
            due = _extension(team, (f"{BASE}/StructureDefinition/expected-delivery-date",))
            if due is None:
                raise RecordError("CareTeam.extension(expected-delivery-date)", "is required for an unborn child",
                                  "missing")
            subject = {"identifiers": {}, "expected_delivery_date": _iso(due.valueDate),
                       "family_name": team.subject.display or None}
        when = end or start
        return envelope(
            connector=NAME, key=("CareTeam", team.id, ident.value, _iso(start), _iso(end)),
            event_type="social_care.child_protection_plan.v1", agency=Agency.SOCIAL_CARE, ctx=ctx, subject=subject,
            occurred_at=min(start_of(when), ctx.now),
            payload={"action": "end" if end else "start", "plan_start": _iso(start), "plan_end": _iso(end),
                     "category": abuse, "local_authority_code": la, "team_name": team.name or "",
                     "team_contact": contact})


def _subject(patient: Any) -> dict[str, Any]:
    nhs = next((i.value for i in (patient.identifier or []) if i.system == NHS_NUMBER), None)
    name = (patient.name or [None])[0]
    given = (name.given or [None])[0] if name else None
    return {"identifiers": {"nhs_number": nhs} if nhs else {},
            "given_name": given, "family_name": name.family if name else None,
            "date_of_birth": _iso(patient.birthDate),
            "postcode": next((a.postalCode for a in (patient.address or []) if a.postalCode), None)}
