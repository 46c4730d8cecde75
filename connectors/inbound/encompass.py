"""`encompass`: a police force's Operation Encompass notification, in the shape of the Police
iHub Standard Data Model (a JSON:API document: the incident in `data`, the people in
`included`), becomes one `police.domestic_abuse_incident.v1` per child (the version the
partnership's Encompass agreements cover), to reach the child's school before the next school
day.

    {"data": {"type": "incident", "id": "...", "attributes": {"reference": "NSP-1234567",
       "occurredAt": "...", "locationType": "HOME", "domesticAbuse": true, "riskGrade": "MEDIUM",
       "circumstances": "..."}, "relationships": {"persons": {"data": [{"type": "person", "id": "p1"}]}}},
     "included": [{"type": "person", "id": "p1", "attributes": {"role": "CHILD", "personId": "NSP/123456",
       "givenName": "...", "familyName": "...", "dateOfBirth": "2016-04-01", "schoolUrn": "900001",
       "childPresent": true, "childLocation": "ELSEWHERE_IN_PROPERTY", "spokenTo": true, "voiceOfChild": "..."}}]}
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.base import Connector, Context, FileRejected, RecordError, code, envelope, parse_datetime, read_json
from connectors.codes import table
from schemas.envelope import Agency

NAME = "encompass"


class Encompass(Connector):
    name = NAME
    agency = Agency.POLICE
    summary = "police notification JSON (iHub SDM shape) -> domestic abuse incident, one per child"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        doc = read_json(path)
        documents = doc if isinstance(doc, list) else [doc]  # one notification, or a list of them
        for number, notification in enumerate(documents, start=1):
            data = notification.get("data") if isinstance(notification, dict) else None
            if not isinstance(data, dict) or data.get("type") != "incident":
                if len(documents) == 1:
                    raise FileRejected("not a police notification: expected data.type incident")
                yield f"record {number}", None
                continue
            included = notification.get("included")
            people = {(p.get("type"), p.get("id")): p for p in (included if isinstance(included, list) else [])
                      if isinstance(p, dict) and isinstance(p.get("id"), str)}
            yield f"record {number}", (data, people)

    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        if record is None:
            raise RecordError("data.type", "not an incident", "invalid")
        data, people = record
        attrs = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}
        flag = attrs.get("domesticAbuse")
        if not isinstance(flag, bool):  # "true", "Y", 1 or a missing flag: never taken as "not domestic abuse"
            raise RecordError("data.attributes.domesticAbuse", "must be true or false", "missing" if flag is None
                              else "invalid")
        if not flag:
            return []  # Encompass is for domestic abuse incidents only
        reference = attrs.get("reference")
        if not reference or not isinstance(reference, str):
            raise RecordError("data.attributes.reference", "is required", "missing")
        if reference.split("-", 1)[0] != ctx.org_id:  # a force notifies its own incidents only
            raise RecordError("data.attributes.reference", "is not a reference of --org", "wrong_force")
        at = parse_datetime(attrs.get("occurredAt"), "data.attributes.occurredAt")
        assert at is not None
        place = code(table(NAME, "location_type"), attrs.get("locationType"), "data.attributes.locationType")
        risk = code(table(NAME, "risk_grade"), attrs.get("riskGrade"), "data.attributes.riskGrade")
        roles = table(NAME, "person_role")
        events = []
        # The SDM names relationships by role ("victim", "children"); every one that points at
        # a person is read, and a person's own `role` attribute, when given, says what they are.
        for relation, link, where in _person_links(data):
            person = people.get((link.get("type"), link.get("id")))
            if person is None:
                raise RecordError(where, "no person with this type and id in `included`", "dangling_reference")
            p = person.get("attributes") or {}
            if code(roles, p.get("role") or relation.upper(), f"{where} (person).role") != "child":
                continue
            location = code(table(NAME, "child_location"), p.get("childLocation"), f"{where} (person).childLocation")
            present = p.get("childPresent")
            if not isinstance(present, bool):
                raise RecordError(f"{where} (person).childPresent", "is required, true or false", "missing")
            subject = {"identifiers": {"police_person_id": p.get("personId")}, "given_name": _name(p.get("givenName")),
                       "family_name": _name(p.get("familyName")), "date_of_birth": p.get("dateOfBirth"),
                       "postcode": p.get("postcode")}
            events.append(envelope(
                connector=NAME, key=(reference, p.get("personId") or person.get("id")),
                event_type="police.domestic_abuse_incident.v1", agency=Agency.POLICE, ctx=ctx, subject=subject,
                occurred_at=at,
                payload={"police_reference": reference, "incident_at": at.isoformat(), "location_type": place,
                         "child_present": present, "child_location": location,
                         "child_spoken_to": bool(p.get("spokenTo")), "child_voice": p.get("voiceOfChild") or None,
                         "circumstances": attrs.get("circumstances"), "school_urn": p.get("schoolUrn"),
                         "risk_grade": risk}))
        if not events:
            raise RecordError("included", "no child (role CHILD) is linked to the incident", "no_child")
        return events


def _name(value: Any) -> Any:
    """The SDM gives some names as lists of parts (givenName[])."""
    return " ".join(str(v) for v in value) if isinstance(value, list) else value


def _person_links(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    relationships = data.get("relationships")
    for n, (relation, rel) in enumerate((relationships if isinstance(relationships, dict) else {}).items()):
        links = rel.get("data") if isinstance(rel, dict) else None
        links = links if isinstance(links, list) else [links] if isinstance(links, dict) else []
        for i, link in enumerate(links):
            if isinstance(link, dict) and link.get("type") == "person" and isinstance(link.get("id"), str):
                # the relationship's name is the file's: it names the role, never the message
                yield str(relation), link, f"data.relationships[{n}].data[{i}]"
