"""`school-sessions`: a school MIS's per-session attendance marks (2024 national codes) become
an attendance concern for each pupil whose attendance crosses the partnership's thresholds
(policies/data/attendance.yaml).

Input, JSON: {"school_urn", "la_code", "pupils": [{"upn", "given_name", "family_name",
"date_of_birth", "marks": [{"date": "2026-09-07", "session": "AM", "code": "N"}, ...]}]}."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import (
    Connector,
    Context,
    FileRejected,
    RecordError,
    code,
    envelope,
    parse_date,
    read_json,
    start_of,
)
from connectors.codes import table
from schemas.envelope import Agency

NAME = "school-sessions"


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    persistent_absence_below_pct: float = Field(gt=0, le=100)
    minimum_possible_sessions: int = Field(ge=1, le=400)
    consecutive_unexplained_sessions: int = Field(ge=1, le=400)
    unexplained_codes: list[str] = Field(min_length=1)


def load_thresholds(data_dir: Path) -> Thresholds:
    """policies/data/attendance.yaml, validated; ValueError naming the field otherwise."""
    path = data_dir / "attendance.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        thresholds = Thresholds.model_validate(raw.get("attendance_concern"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {type(exc).__name__}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "attendance_concern"
        raise ValueError(f"{path}: attendance_concern.{where}: {first['msg']}") from None
    unknown = set(thresholds.unexplained_codes) - set(table("school_sessions", "codes"))
    if unknown:
        raise ValueError(f"{path}: attendance_concern.unexplained_codes: not attendance codes: {sorted(unknown)}")
    return thresholds


class SchoolSessions(Connector):
    name = NAME
    agency = Agency.SCHOOL
    summary = "per-session attendance JSON (2024 codes) -> attendance concern when thresholds are crossed"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("pupils"), list):
            raise FileRejected("not a session attendance file: expected an object with a `pupils` list")
        school = {"school_urn": doc.get("school_urn"), "la_code": doc.get("la_code")}
        if str(school["school_urn"]) != ctx.org_id:  # a school reports its own pupils only
            raise FileRejected(f"school_urn is another school's, not --org {ctx.org_id}")
        # ...to its own authority: agreements route attendance concerns by la_code.
        authorities = ctx.settings.get("local_authorities", {})
        la = authorities.get(school["la_code"]) if isinstance(school["la_code"], str) else None
        if la is None:
            raise FileRejected("la_code is not an authority in policies/data/local_authorities.yaml")
        own = ctx.settings.get("laestab", {}).get(ctx.org_id)
        if own is not None and own[:3] != la.dfe_la_number:
            raise FileRejected(f"la_code is not the authority of --org {ctx.org_id} (LAESTAB {own})")
        for number, pupil in enumerate(doc["pupils"], start=1):
            yield f"pupil {number}", (school, pupil)

    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        school, pupil = record
        if not isinstance(pupil, dict):
            raise RecordError("pupils[]", "not an object", "invalid")
        thresholds: Thresholds = ctx.settings["thresholds"]
        codes, sessions = table("school_sessions", "codes"), table("school_sessions", "sessions")
        marks = pupil.get("marks")
        if not isinstance(marks, list) or not marks:
            raise RecordError("marks", "needs at least one session mark", "missing")
        seen: dict[tuple[date, str], str] = {}
        for i, mark in enumerate(marks):
            if not isinstance(mark, dict):
                raise RecordError(f"marks[{i}]", "not an object", "invalid")
            day = parse_date(mark.get("date"), f"marks[{i}].date")
            session = code(sessions, mark.get("session"), f"marks[{i}].session")
            category = code(codes, mark.get("code"), f"marks[{i}].code")
            assert day is not None and session is not None and category is not None
            if (day, session) in seen:
                raise RecordError(f"marks[{i}]", "a second mark for the same date and session", "duplicate")
            seen[(day, session)] = mark["code"].strip()
        ordered = sorted(seen.items())  # by date, then AM before PM
        possible = [c for _, c in ordered if codes[c] != "not_possible"]
        attended = sum(1 for c in possible if codes[c] in ("present", "approved"))
        run = longest = 0
        for c in possible:
            run = run + 1 if c in thresholds.unexplained_codes else 0
            longest = max(longest, run)
        pct = round(100 * attended / len(possible), 1) if possible else 100.0
        persistent = (len(possible) >= thresholds.minimum_possible_sessions
                      and pct < thresholds.persistent_absence_below_pct)
        if not (persistent or longest >= thresholds.consecutive_unexplained_sessions):
            return []
        first, last = ordered[0][0][0], ordered[-1][0][0]
        upn = pupil.get("upn")
        if not upn:
            raise RecordError("upn", "is required to report a pupil", "missing")
        subject = {"identifiers": {"upn": upn}, "given_name": pupil.get("given_name"),
                   "family_name": pupil.get("family_name"), "date_of_birth": pupil.get("date_of_birth")}
        return [envelope(
            connector=NAME, key=(school.get("school_urn"), str(upn).upper(), first, last),
            event_type="school.attendance_concern.v1", agency=Agency.SCHOOL, ctx=ctx, subject=subject,
            occurred_at=min(start_of(last + timedelta(days=1)), ctx.now),  # known once the last day ended
            payload={"school_urn": school.get("school_urn"), "la_code": school.get("la_code"),
                     "period_start": first.isoformat(), "period_end": last.isoformat(),
                     "sessions_possible": len(possible), "sessions_attended": attended,
                     "attendance_pct": pct, "consecutive_absences": longest})]
