"""`ctf`: a school's DfE Common Transfer File (XML: `CTfile/Header`, `CTfile/CTFpupilData/Pupil`
with UPN, names, DOB, `Attendance/YearData`, `LookedAfter`, `SchoolHistory`), sent when pupils
leave. A leaver whose attendance in the latest year crosses the partnership's thresholds
(policies/data/attendance.yaml) becomes a `school.attendance_concern` from this school; a
"lost pupil" CTF (destination LA XXX, school XXXX: nobody knows where the child went) makes
each pupil a `school.child_missing_education`.

What a CTF cannot say: it has no marker for elective home education (that removal from roll is
notified to the local authority separately), so no EHE event is derived from it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from connectors.base import Connector, Context, FileRejected, RecordError, envelope, parse_date, start_of
from connectors.xml import parse_xml as _parse
from connectors.xml import text as _text
from schemas.envelope import Agency

NAME = "ctf"


def _int(node: Any, path: str, where: str) -> int:
    value = _text(node, path)
    if value is None or not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise RecordError(where, "is required, a whole number", "invalid_number")
    return int(value)


class Ctf(Connector):
    name = NAME
    agency = Agency.SCHOOL
    summary = "DfE Common Transfer File XML -> attendance concerns; children missing education (lost pupil CTF)"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        root = _parse(path)
        if root.tag != "CTfile" or root.find("CTFpupilData") is None:
            raise FileRejected("not a Common Transfer File: expected CTfile/CTFpupilData")
        lea = _text(root, "Header/SourceSchool/LEA")
        # A school publishes its own pupils only: the file's source school must be --org's (a CTF
        # another school sent it for a joiner must not go out as this school's, with that
        # school's authority).
        own = ctx.settings.get("laestab", {}).get(ctx.org_id)
        if own is None:
            raise FileRejected(f"--org {ctx.org_id} has no dfe_laestab in partners.yaml: the CTF's source school "
                               "cannot be checked")
        if f"{lea or ''}{_text(root, 'Header/SourceSchool/Estab') or ''}" != own:
            raise FileRejected(f"Header/SourceSchool (LEA and Estab) is not {ctx.org_id}'s LAESTAB {own}")
        authorities = ctx.settings.get("local_authorities", {})
        la = next((code for code, a in authorities.items() if a.dfe_la_number == lea), None)
        lost = _text(root, "Header/DestSchool/LEA") == "XXX"  # DfE: destination unknown, a "lost pupil"
        for number, pupil in enumerate(root.iterfind("CTFpupilData/Pupil"), start=1):
            yield f"record {number}", (la, pupil, lost)

    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        la, pupil, lost = record
        events = [self._missing_education(la, pupil, ctx)] if lost else []
        return events + self._attendance(la, pupil, ctx)

    def _subject(self, pupil: Any) -> tuple[str, dict[str, Any]]:
        born = parse_date(_text(pupil, "DOB"), "DOB")
        upn = _text(pupil, "UPN")
        if not upn:
            raise RecordError("UPN", "is required to report a pupil", "missing")
        return upn, {"identifiers": {"upn": upn}, "given_name": _text(pupil, "Forename"),
                     "family_name": _text(pupil, "Surname"), "date_of_birth": born.isoformat() if born else None,
                     "postcode": _text(pupil, "Address/PostCode")}

    def _missing_education(self, la: str | None, pupil: Any, ctx: Context) -> dict[str, Any]:
        if la is None:
            raise RecordError("Header/SourceSchool/LEA", "not a DfE LA number in policies/data/local_authorities.yaml",
                              "unknown_authority")
        left = max((d for s in pupil.iterfind("SchoolHistory/School")
                    if (d := parse_date(_text(s, "LeavingDate"), "SchoolHistory/School/LeavingDate", required=False))),
                   default=None)
        if left is None:
            raise RecordError("SchoolHistory/School/LeavingDate", "is required for a pupil whose destination is "
                              "unknown", "missing")
        upn, subject = self._subject(pupil)
        return envelope(
            connector=NAME, key=(upn.upper(), "missing-education", left),
            event_type="school.child_missing_education.v1", agency=Agency.SCHOOL, ctx=ctx, subject=subject,
            occurred_at=min(start_of(left), ctx.now),
            payload={"school_urn": ctx.org_id, "la_code": la, "left_roll_on": left.isoformat()})

    def _attendance(self, la: str | None, pupil: Any, ctx: Context) -> list[dict[str, Any]]:
        thresholds = ctx.settings["thresholds"]
        years = pupil.findall("Attendance/YearData")
        if not years:
            return []
        latest = max(years, key=lambda y: _text(y, "Year") or "")
        year = _text(latest, "Year")
        if year is None or not (year.isascii() and year.isdigit() and 2000 <= int(year) <= 2100):
            raise RecordError("Attendance/YearData/Year", "is required, e.g. 2024", "invalid_number")
        possible = _int(latest, "SessionsPossible", "Attendance/YearData/SessionsPossible")
        attended = _int(latest, "SessionsAttended", "Attendance/YearData/SessionsAttended")
        if possible == 0:
            return []
        if attended > possible:
            raise RecordError("Attendance/YearData/SessionsAttended", "exceeds SessionsPossible", "inconsistent")
        marks = "".join(_text(s, "AttendanceMarks") or "" for s in latest.iterfind("AttendSessions"))
        run = longest = 0
        for mark in marks:
            run = run + 1 if mark in thresholds.unexplained_codes else 0
            longest = max(longest, run)
        pct = round(100 * attended / possible, 1)
        persistent = possible >= thresholds.minimum_possible_sessions and pct < thresholds.persistent_absence_below_pct
        if not (persistent or longest >= thresholds.consecutive_unexplained_sessions):
            return []
        if la is None:
            raise RecordError("Header/SourceSchool/LEA", "not a DfE LA number in policies/data/local_authorities.yaml",
                              "unknown_authority")
        start = date(int(year), 9, 1)
        left = max((parse_date(_text(s, "LeavingDate"), "SchoolHistory/School/LeavingDate", required=False)
                    or date.min for s in pupil.iterfind("SchoolHistory/School")), default=date.min)
        end = min(date(int(year) + 1, 8, 31), left if left != date.min else date(int(year) + 1, 8, 31))
        upn, subject = self._subject(pupil)
        return [envelope(
            connector=NAME, key=(upn.upper(), year), event_type="school.attendance_concern.v1", agency=Agency.SCHOOL,
            ctx=ctx, subject=subject, occurred_at=min(start_of(end + timedelta(days=1)), ctx.now),
            payload={"school_urn": ctx.org_id, "la_code": la, "period_start": start.isoformat(),
                     "period_end": end.isoformat(), "sessions_possible": possible, "sessions_attended": attended,
                     "attendance_pct": pct, "consecutive_absences": longest})]
