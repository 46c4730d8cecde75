"""`ssda903`: the local authority's SSDA903 (children looked after) return, its CSV tables
Header (`CHILD,SEX,DOB,ETHNIC,UPN,MOTHER,MC_DOB`) and Episodes (`CHILD,DECOM,RNE,LS,CIN,PLACE,
PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN`), dates dd/mm/yyyy, as a
directory or a .zip holding them, with the Missing table (`CHILD,DOB,MISSING,MIS_START,MIS_END`)
when there is one. A period of care starting (RNE S) becomes a looked-after status `start`;
one ending (REC other than X1) an `end`, with the legal status and placement of its last
episode; each Missing row a `social_care.missing_from_care` (M missing, A away). Changes of
placement or legal status within a period (RNE L P T B U) have no event in the catalogue yet
and send nothing."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.base import Connector, Context, FileRejected, RecordError, code, envelope, parse_date, start_of
from connectors.codes import table
from schemas.envelope import Agency

NAME = "ssda903"
DATE = ("%d/%m/%Y",)
HEADER = ("CHILD", "SEX", "DOB", "ETHNIC", "UPN", "MOTHER", "MC_DOB")
EPISODES = ("CHILD", "DECOM", "RNE", "LS", "CIN", "PLACE", "PLACE_PROVIDER", "DEC", "REC", "REASON_PLACE_CHANGE",
            "HOME_POST", "PL_POST", "URN")
MISSING = ("CHILD", "DOB", "MISSING", "MIS_START", "MIS_END")
#: a whole authority's return is a few MiB of CSV
MAX_UNZIPPED = 200 * 2**20
#: rows per table: the largest authority looks after a few thousand children a year
MAX_ROWS = 50_000
#: columns per table (the DfE's have 5-13)
MAX_COLUMNS = 100
#: a Header row that is not the child's only one
_AMBIGUOUS: dict[str, str] = {}


def _tables(path: Path) -> dict[str, list[dict[str, str]]]:
    """Every CSV of the return, recognised by its header row (as the DfE validator does)."""
    texts: list[tuple[str, str]] = []
    try:
        if path.is_dir():
            texts = [(p.name, p.read_text(encoding="utf-8-sig")) for p in sorted(path.glob("*.csv"))]
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                members = [i for i in z.infolist() if i.filename.lower().endswith(".csv")]
                if sum(i.file_size for i in members) > MAX_UNZIPPED:  # a zip bomb is not a return
                    raise FileRejected(f"the .zip unpacks to more than {MAX_UNZIPPED // 2**20} MiB of CSV")
                texts = [(i.filename, z.read(i).decode("utf-8-sig")) for i in members]
        else:
            texts = [(path.name, path.read_text(encoding="utf-8-sig"))]
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile):
        raise FileRejected("not an SSDA903 return (CSV files, or a .zip of them)") from None
    found: dict[str, list[dict[str, str]]] = {}
    for _, text in texts:
        columns = tuple(c.strip() for c in (csv.reader(io.StringIO(text)).__next__() if text.strip() else []))
        for name, expected in (("Header", HEADER), ("Episodes", EPISODES), ("Missing", MISSING)):
            if not set(expected) <= set(columns):
                continue
            if name in found:  # which is the return's? Never pick one silently
                raise FileRejected(f"two CSV files look like the {name} table")
            if len(columns) > MAX_COLUMNS:
                raise FileRejected(f"the {name} table has more than {MAX_COLUMNS} columns")
            rows: list[dict[str, str]] = []
            for r in csv.DictReader(io.StringIO(text)):
                if len(rows) == MAX_ROWS:  # rows cost ~70x their bytes once read: bounded, not a return
                    raise FileRejected(f"the {name} table has more than {MAX_ROWS} rows")
                # Only the table's own columns are kept: what is held is at most rows x columns.
                rows.append({k.strip(): (v or "").strip() for k, v in r.items()
                             if isinstance(k, str) and k.strip() in expected})
            found[name] = rows
    if "Episodes" not in found or "Header" not in found:
        raise FileRejected("an SSDA903 return needs its Header and Episodes tables (recognised by their columns)")
    return found


class Ssda903(Connector):
    name = NAME
    agency = Agency.SOCIAL_CARE
    summary = "SSDA903 CSV tables (Header, Episodes, Missing) -> looked-after status start/end, missing from care"

    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        tables = _tables(path)
        children: dict[str, dict[str, str]] = {}
        for row in tables["Header"]:
            child = row.get("CHILD", "")
            children[child] = _AMBIGUOUS if child in children else row
        episodes: dict[str, list[tuple[int, dict[str, str]]]] = {}
        missing: dict[str, list[tuple[int, dict[str, str]]]] = {}
        for line, row in enumerate(tables["Episodes"], start=2):
            episodes.setdefault(row.get("CHILD", ""), []).append((line, row))
        for line, row in enumerate(tables.get("Missing", []), start=2):
            missing.setdefault(row.get("CHILD", ""), []).append((line, row))
        order = list(episodes) + [c for c in missing if c not in episodes]
        for number, child in enumerate(order, start=1):  # a record: one child's episodes and missing rows
            yield f"record {number}", (children.get(child), episodes.get(child, []), missing.get(child, []))

    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        header, rows, missing = record
        if header is None:
            raise RecordError("Episodes.CHILD", "no Header row for this child", "unknown_child")
        if header is _AMBIGUOUS:  # which date of birth, which UPN? Never the last one silently
            raise RecordError("Header.CHILD", "more than one Header row for this child", "duplicate_child")
        dob = parse_date(header.get("DOB"), "Header.DOB", formats=DATE)
        identifiers = {"la_child_id": f"{ctx.org_id}-{header['CHILD']}"}
        upn = header.get("UPN", "")
        if upn and not upn.upper().startswith("UN"):  # UN1-UN5: UPN unknown, with a reason
            identifiers["upn"] = upn
        subject: dict[str, Any] = {"identifiers": identifiers, "date_of_birth": dob.isoformat() if dob else None}
        events: list[dict[str, Any]] = []
        dated = [(parse_date(row.get("DECOM"), f"Episodes.DECOM (line {line})", formats=DATE), line, row)
                 for line, row in rows]
        ordered = [(line, row) for _, line, row in sorted(dated, key=lambda d: (d[0], d[1]))]
        period_start = None
        for line, row in ordered:
            at = f"(line {line})"
            decom = parse_date(row.get("DECOM"), f"Episodes.DECOM {at}", formats=DATE)
            rne = code(table(NAME, "reason_new_episode"), row.get("RNE"), f"Episodes.RNE {at}")
            legal = code(table(NAME, "legal_status"), row.get("LS"), f"Episodes.LS {at}")
            placement = code(table(NAME, "placement_type"), row.get("PLACE"), f"Episodes.PLACE {at}")
            dec = parse_date(row.get("DEC"), f"Episodes.DEC {at}", formats=DATE, required=False)
            rec = code(table(NAME, "reason_episode_ceased"), row.get("REC"), f"Episodes.REC {at}",
                       required=dec is not None)
            assert decom is not None
            if rne == "started":
                period_start = decom
                events.append(self._event(ctx, subject, header, "start", legal, placement, decom, None, decom))
            if rec == "ended" and dec is not None:
                start = period_start or decom  # a period that began before this return's year
                events.append(self._event(ctx, subject, header, "end", legal, placement, start, dec, dec))
                period_start = None
        for line, row in missing:
            at = f"(line {line})"
            kind = code(table(NAME, "missing"), row.get("MISSING"), f"Missing.MISSING {at}")
            started = parse_date(row.get("MIS_START"), f"Missing.MIS_START {at}", formats=DATE)
            ended = parse_date(row.get("MIS_END"), f"Missing.MIS_END {at}", formats=DATE, required=False)
            assert started is not None
            events.append(envelope(
                connector=NAME, key=(header["CHILD"], "missing", started.isoformat()),
                event_type="social_care.missing_from_care.v1", agency=Agency.SOCIAL_CARE, ctx=ctx, subject=subject,
                occurred_at=min(start_of(started), ctx.now),
                payload={"kind": kind, "started_on": started.isoformat(),
                         "ended_on": ended.isoformat() if ended else None, "placing_authority_code": ctx.org_id}))
        return events

    def _event(self, ctx: Context, subject: dict[str, Any], header: dict[str, str], action: str, legal: Any,
               placement: Any, start: Any, end: Any, when: Any) -> dict[str, Any]:
        return envelope(
            connector=NAME, key=(header["CHILD"], action, start.isoformat()),
            event_type="social_care.looked_after_status.v1",
            agency=Agency.SOCIAL_CARE, ctx=ctx, subject=subject, occurred_at=min(start_of(when), ctx.now),
            payload={"action": action, "legal_status": legal, "period_start": start.isoformat(),
                     "period_end": end.isoformat() if end else None, "placing_authority_code": ctx.org_id,
                     "placement_type": placement})
