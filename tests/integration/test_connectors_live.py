"""Issue 15 on the real stack: partners' own files go through their connectors, signed as the
source organisation, and each partner receives what its agreements allow, once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bus.kafka_io import idempotent_producer, produce_all
from bus.topics import deliver_topic
from connectors.base import Context
from connectors.inbound import CONNECTORS, connector_settings
from connectors.ledger import Ledger
from connectors.run import watch
from tests.helpers import wait_for
from tests.integration.conftest import Bus

REPO = Path(__file__).parents[2]
GOLDEN = REPO / "tests" / "data" / "connectors"
SAMPLES = REPO / "connectors" / "samples"


def _run(bus: Bus, name: str, org: str, drop: Path, ledger: Path) -> Any:
    connector = CONNECTORS[name]()
    producer = idempotent_producer(bus.publisher(connector.agency.value, org))
    ctx = Context(org_id=org, settings=connector_settings(name, REPO / "policies" / "data"))
    reports: list[str] = []
    stats = watch(drop, connector, ctx, Ledger(ledger), bus.signers.sign,
                  lambda records: produce_all(producer, records), once=True, report=reports.append)
    return stats, reports


def _expected(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (GOLDEN / name / "expected.jsonl").read_text().splitlines() if line]


def _received(bus: Bus, partner: str, ids: set[str], count: int) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        got = [r for r in bus.records(deliver_topic(partner), timeout_s=1.5) if r["event_id"] in ids]
        return got if len(got) >= count else None
    return wait_for(probe, 90, what=f"{count} deliveries to {partner}")


def test_police_and_school_files_reach_the_schools_and_the_mash_once(bus: Bus, tmp_path: Path) -> None:
    for name, org, source in (("encompass", "NSP", "notifications.json"),
                              ("school-sessions", "900001", "sessions.json")):
        drop = tmp_path / name
        drop.mkdir()
        shutil.copy(SAMPLES / name / source, drop / source)
        stats, reports = _run(bus, name, org, drop, tmp_path / f"{name}.sqlite")
        assert (stats.published, stats.rejected) == (len(_expected(name)), 1), reports
        # Delivered again (same file, another name), and the connector restarted: nothing new.
        shutil.copy(drop / source, drop / f"again-{source}")
        stats, _ = _run(bus, name, org, drop, tmp_path / f"{name}.sqlite")
        assert stats.published == 0

    kayden, skye = _expected("encompass")
    concerns = _expected("school-sessions")
    oakfield = _received(bus, "oakfield-primary", {kayden["event_id"], skye["event_id"]}, 1)
    riverside = _received(bus, "riverside-academy", {kayden["event_id"], skye["event_id"]}, 1)
    assert [d["event_id"] for d in oakfield] == [kayden["event_id"]]  # each school hears of its own pupil only
    assert [d["event_id"] for d in riverside] == [skye["event_id"]]
    assert "circumstances" not in oakfield[0]["payload"]  # Encompass: the school gets no narrative

    ids = {kayden["event_id"], skye["event_id"], *(c["event_id"] for c in concerns)}
    mash = _received(bus, "northshire-csc", ids, 4)
    assert sorted(d["event_id"] for d in mash) == sorted(ids)  # once each, though sent twice
    by_id = {d["event_id"]: d for d in mash}
    assert by_id[kayden["event_id"]]["payload"]["circumstances"] == kayden["payload"]["circumstances"]  # reveal
    assert {by_id[c["event_id"]]["payload"]["attendance_pct"] for c in concerns} == {66.7, 90.0}
    assert all(d["provenance"]["kid"] for d in mash)  # signed by the source organisation's key


def test_nhs_and_social_care_returns_reach_the_partners_their_agreements_name(bus: Bus, tmp_path: Path) -> None:
    """FHIR attendances, a CIN census, an SSDA903 return and a CTF, each through its connector:
    every event is decided (audited) and the allowed ones are delivered."""
    runs = (("nhs-fhir", "RNX", "ed-attendances.xml"), ("cin-census", "N01", "cin-2024-25.xml"),
            ("ssda903", "N01", "return-2026"), ("ctf", "900001", "9999001_CTF_9994001_001.xml"),
            ("ctf", "900001", "9999001_CTF_XXXXXXX_001.xml"))
    for name, org, source in runs:
        drop = tmp_path / name / source
        drop.mkdir(parents=True)
        target = SAMPLES / name / source
        if target.is_dir():  # a multi-table return arrives as one zip
            shutil.make_archive(str(drop / "return"), "zip", target)
        else:
            shutil.copy(target, drop / source)
        stats, reports = _run(bus, name, org, drop, tmp_path / f"{name}.sqlite")
        assert stats.rejected == 1 and stats.published >= 1, reports

    attendance = _expected_file("nhs-fhir", "ed-attendances.expected.jsonl")[0]
    assert [d["event_id"] for d in _received(bus, "northshire-csc", {attendance["event_id"]}, 1)] == \
        [attendance["event_id"]]
    plans = [e for e in _expected("cin-census") if e["event_type"].startswith("social_care.child_protection_plan")]
    cpis = _received(bus, "northshire-nhs-uec", {p["event_id"] for p in plans}, len(plans))
    assert {d["payload"]["action"] for d in cpis} == {"start", "end"}  # CP-IS: plans starting and ending
    concern = _expected("ctf")[0]
    assert _received(bus, "northshire-csc", {concern["event_id"]}, 1)[0]["payload"]["attendance_pct"] == 77.9
    ssda903 = _expected("ssda903")
    missing = [e for e in ssda903 if e["event_type"] == "social_care.missing_from_care.v1"]
    police = _received(bus, "northshire-police", {e["event_id"] for e in missing}, len(missing))
    assert {d["payload"]["kind"] for d in police} == {"missing", "away"}  # DSA-MFC-001
    looked_after = [e for e in ssda903 if e not in missing]
    to_nhs = _received(bus, "northshire-nhs-uec", {e["event_id"] for e in looked_after}, len(looked_after))
    assert {d["payload"]["action"] for d in to_nhs} == {"start", "end"}  # CP-IS: looked-after status
    lost = _expected_file("ctf", "lost-pupil.expected.jsonl")[0]
    assert lost["event_type"] == "school.child_missing_education.v1"
    cme = _received(bus, "northshire-csc", {lost["event_id"]}, 1)[0]  # DSA-CME-001: the local authority
    assert cme["payload"]["left_roll_on"] == "2026-11-20" and cme["subject"]["identifiers"]["upn"]


def _expected_file(name: str, file: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (GOLDEN / name / file).read_text().splitlines() if line]
