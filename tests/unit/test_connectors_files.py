"""Connectors refuse what is not their format, as one clear error, and read nothing a file
asks them to fetch (XML entities, DTDs)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from connectors.base import Context, Converted, FileRejected
from connectors.inbound import CONNECTORS, connector_settings

REPO = Path(__file__).parents[2]
NOW = datetime.fromisoformat("2026-11-26T06:00:00+00:00")


def _convert(name: str, org: str, path: Path) -> list[object]:
    ctx = Context(org_id=org, now=NOW, settings=connector_settings(name, REPO / "policies" / "data"))
    return list(CONNECTORS[name]().convert(path, ctx))


@pytest.mark.parametrize(("name", "org"), [("encompass", "NSP"), ("school-sessions", "900001"),
                                           ("nhs-fhir", "RNX"), ("cin-census", "N01"), ("ssda903", "N01")])
def test_a_file_of_another_kind_is_one_clear_error(name: str, org: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a return\x00")
    with pytest.raises(FileRejected):
        _convert(name, org, junk)


def test_an_xml_external_entity_is_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    source = (REPO / "connectors" / "samples" / "cin-census" / "cin-2024-25.xml").read_text()
    evil = source.replace("<Message>", f'<!DOCTYPE Message [<!ENTITY x SYSTEM "file://{secret}">]>\n<Message>', 1)
    evil = evil.replace("<LAchildID>SYN0001</LAchildID>", "<LAchildID>&x;</LAchildID>", 1)
    path = tmp_path / "evil.xml"
    path.write_text(evil)
    try:
        results = _convert("cin-census", "N01", path)
    except FileRejected:
        return
    assert not any("TOPSECRET" in str(getattr(r, "event", r)) for r in results)
    assert any(isinstance(r, Converted) for r in results)


def test_a_return_from_another_authority_is_refused(tmp_path: Path) -> None:
    source = (REPO / "connectors" / "samples" / "cin-census" / "cin-2024-25.xml").read_text()
    path = tmp_path / "other-la.xml"
    path.write_text(source.replace("<LEA>999</LEA>", "<LEA>931</LEA>"))
    with pytest.raises(FileRejected, match=r"not N01's DfE LA number 999"):
        _convert("cin-census", "N01", path)


def test_a_school_cannot_report_another_schools_pupils(tmp_path: Path) -> None:
    source = (REPO / "connectors" / "samples" / "school-sessions" / "sessions.json").read_text()
    path = tmp_path / "other.json"
    path.write_text(source.replace('"school_urn": "900001"', '"school_urn": "900002"'))
    with pytest.raises(FileRejected, match=r"another school's, not --org 900001"):
        _convert("school-sessions", "900001", path)


def test_an_ssda903_zip_that_unpacks_to_gigabytes_is_refused(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("Episodes.csv", "0" * (201 * 2**20))
    with pytest.raises(FileRejected, match="more than 200 MiB"):
        _convert("ssda903", "N01", path)


def _return_zip(path: Path, extra: dict[str, str]) -> Path:
    import zipfile

    sample = REPO / "connectors" / "samples" / "ssda903" / "return-2026"
    with zipfile.ZipFile(path, "w") as z:
        for csv_file in sorted(sample.glob("*.csv")):
            z.writestr(f"a/{csv_file.name}", csv_file.read_text())
        for name, text in extra.items():
            z.writestr(name, text)
    return path


def test_an_ssda903_return_with_two_episodes_tables_is_refused_not_one_picked(tmp_path: Path) -> None:
    header = (REPO / "connectors" / "samples" / "ssda903" / "return-2026" / "Episodes.csv").read_text().splitlines()[0]
    path = _return_zip(tmp_path / "two.zip", {"b/Episodes.csv": header + "\n"})  # header only: no episodes
    with pytest.raises(FileRejected, match="two CSV files look like the Episodes table"):
        _convert("ssda903", "N01", path)


def test_a_child_with_two_header_rows_is_rejected_not_given_the_last_ones_details(tmp_path: Path) -> None:
    sample = REPO / "connectors" / "samples" / "ssda903" / "return-2026"
    (tmp_path / "r").mkdir()
    for csv_file in sample.glob("*.csv"):
        (tmp_path / "r" / csv_file.name).write_text(csv_file.read_text())
    with (tmp_path / "r" / "Header.csv").open("a") as f:
        f.write("SYN2001,F,01/01/2015,WBRI,N999201500009,0,\n")  # another date of birth and UPN
    before = {(r.field, r.code) for r in _convert("ssda903", "N01", sample) if not isinstance(r, Converted)}
    results = _convert("ssda903", "N01", tmp_path / "r")
    rejected = {(r.field, r.code) for r in results if not isinstance(r, Converted)}
    assert rejected - before == {("Header.CHILD", "duplicate_child")}
    assert not any("N999201500009" in json.dumps(r.event) for r in results if isinstance(r, Converted))


def test_an_ssda903_table_of_millions_of_tiny_rows_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc
    import zipfile

    sample = REPO / "connectors" / "samples" / "ssda903" / "return-2026"
    path = tmp_path / "rows.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:  # ~20 KB zipped
        for name in ("Header.csv", "Episodes.csv"):
            z.writestr(name, (sample / name).read_text())
        z.writestr("Missing.csv", "CHILD,DOB,MISSING,MIS_START,MIS_END\n" + "1,2\n" * 2_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(FileRejected, match="more than 50000 rows"):
            _convert("ssda903", "N01", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20


@pytest.mark.parametrize(("name", "org", "text"), [
    ("encompass", "NSP", '{"data": {"type": "incident", "attributes": {"reference": "NSP-1234", "occurredAt": 5, '
                         '"domesticAbuse": true, "riskGrade": {}}, "relationships": [1]}, "included": 7}'),
    ("encompass", "NSP", '{"data": {"type": "incident", "attributes": [1], "relationships": {"persons": {"data": '
                         '[{"type": "person", "id": ["p2"]}]}}}}'),
    ("school-sessions", "900001", '{"school_urn": "900001", "pupils": [{"upn": 5, "marks": '
                                  '[{"date": 20260907, "session": "AM", "code": ["N"]}]}]}'),
    ("encompass", "NSP", "[" * 100_000),
])
def test_odd_values_in_a_file_never_stop_the_run(name: str, org: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(text)
    try:
        results = _convert(name, org, path)
    except FileRejected:
        return
    assert all(not isinstance(r, Converted) for r in results)


def test_a_force_cannot_notify_another_forces_incident(tmp_path: Path) -> None:
    source = (REPO / "connectors" / "samples" / "encompass" / "notifications.json").read_text()
    path = tmp_path / "other.json"
    path.write_text(source.replace("NSP-2026112501", "XSP-2026112501"))
    codes = [r.code for r in _convert("encompass", "NSP", path) if not isinstance(r, Converted)]
    assert "wrong_force" in codes


def test_a_ctf_from_another_school_is_not_published_as_this_schools(tmp_path: Path) -> None:
    source = (REPO / "connectors" / "samples" / "ctf" / "9999001_CTF_9994001_001.xml").read_text()
    path = tmp_path / "joiner.xml"  # another school's CTF, sent to this one for a joiner
    path.write_text(source.replace("<Estab>9001</Estab>", "<Estab>7777</Estab>", 1)
                    .replace("<LEA>999</LEA>", "<LEA>998</LEA>", 1))
    with pytest.raises(FileRejected, match="not 900001's LAESTAB 9999001"):
        _convert("ctf", "900001", path)
    with pytest.raises(FileRejected, match="no dfe_laestab"):  # a school without one cannot use the connector
        _convert("ctf", "900009", tmp_path / "joiner.xml")


def test_an_ssda903_table_of_thousands_of_columns_is_refused(tmp_path: Path) -> None:
    import zipfile

    from connectors.inbound.ssda903 import EPISODES, HEADER

    wide = ",".join([*EPISODES, *(f"x{i}" for i in range(20_000))])
    path = tmp_path / "wide.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("e.csv", wide + "\n" + ("," * 20_012 + "\n") * 200)
        z.writestr("h.csv", ",".join(HEADER) + "\n")
    with pytest.raises(FileRejected, match="more than 100 columns"):
        _convert("ssda903", "N01", path)


@pytest.mark.parametrize(("la_code", "why"), [("S01", "not the authority of --org 900001"),
                                               ("Z99", "not an authority"), (None, "not an authority")])
def test_attendance_is_reported_to_the_schools_own_authority(la_code: str | None, why: str, tmp_path: Path) -> None:
    doc = json.loads(next((REPO / "connectors" / "samples" / "school-sessions").glob("*.json")).read_text())
    doc["la_code"] = la_code  # agreements route attendance concerns by la_code
    path = tmp_path / "marks.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FileRejected, match=why):
        _convert("school-sessions", "900001", path)


def test_a_census_return_must_say_whose_it_is(tmp_path: Path) -> None:
    source = (REPO / "connectors" / "samples" / "cin-census" / "cin-2024-25.xml").read_text()
    path = tmp_path / "anonymous.xml"
    path.write_text(source.replace("<LEA>999</LEA>", ""))
    with pytest.raises(FileRejected, match="not N01's DfE LA number"):
        _convert("cin-census", "N01", path)


def test_the_watch_never_follows_a_symlink_to_another_drop(tmp_path: Path) -> None:
    from connectors.ledger import Ledger
    from connectors.run import watch

    elsewhere = tmp_path / "other-org"
    elsewhere.mkdir()
    target = elsewhere / "notifications.json"
    target.write_text((REPO / "connectors" / "samples" / "encompass" / "notifications.json").read_text())
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "link.json").symlink_to(target)
    sent: list[object] = []
    ctx = Context(org_id="NSP", now=NOW, settings=connector_settings("encompass", REPO / "policies" / "data"))
    stats = watch(drop, CONNECTORS["encompass"](), ctx, Ledger(tmp_path / "l.sqlite"), lambda e: e,
                  lambda records: sent.extend(records) or len(records), once=True, report=lambda _m: None)
    assert sent == [] and stats.files == 0
