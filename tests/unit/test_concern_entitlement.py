"""A concern tells the MASH only of what it may hear of: each event counts in a child's picture only
if policy (the real Rego, through `opa eval`) would send it to every concern recipient today."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest
import yaml
from faust.types import TP

from bus.concern.agent import ConcernCounter
from bus.concern.decide import ConcernDecision, bind_concern_decisions
from bus.exceptions import PolicyUnavailable
from bus.ingest import ingest
from bus.policy.bundle import bundle_extra
from bus.policy.data import Partnership, load_partnership
from bus.policy.decision import Decision, bind_decisions
from bus.policy.revision import policy_revision
from bus.policy.simulate import opa_eval
from bus.provenance.registry import LocalSigners
from bus.pseudonymise.keyring import Keyring
from bus.route import Router
from schemas.envelope import Agency
from schemas.synthetic import Synth

REPO = Path(__file__).parents[2]
POLICIES = REPO / "policies"
PARTNERSHIP = load_partnership(POLICIES / "data")
KEYRING = Keyring.generate()


class RegoPolicy:
    """The partnership's own policies evaluated by the OPA binary (`opa eval`), as OPA serves them."""

    def __init__(self, partnership: Partnership) -> None:
        self.partnership = partnership
        self.revision = policy_revision(POLICIES, partnership.as_opa_data(), bundle_extra(None))
        self.asked: list[dict[str, Any]] = []

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        self.asked += requests
        doc = {"today": today or date.today().isoformat(), "requests": requests}
        _, value = opa_eval(POLICIES, self.partnership, doc, "data.sgbus.share.decisions")
        return bind_decisions(requests, value)

    async def concern_decisions(self, children: list[dict[str, Any]], rule_ids: list[str]) -> list[ConcernDecision]:
        _, value = opa_eval(POLICIES, self.partnership, {"children": children}, "data.sgbus.concern.decisions")
        return bind_concern_decisions(children, rule_ids, value)


class Table:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.changelog: list[tuple[int | None, str, str | None]] = []

    def send_changelog(self, partition: int | None, key: str, value: str | None, **_: Any) -> None:
        self.changelog.append((partition, key, value))


def counter(partnership: Partnership) -> tuple[ConcernCounter, list[dict[str, Any]], RegoPolicy]:
    policy = RegoPolicy(partnership)
    router = Router(partnership, KEYRING, policy, revision=policy.revision)  # type: ignore[arg-type]
    svc = SimpleNamespace(
        keyring=KEYRING,
        router=router,
        metrics=MagicMock(),
        settings=SimpleNamespace(concern_org_id="SGBUS", retry_max_backoff_s=1.0),
    )
    sent: list[dict[str, Any]] = []

    async def send(_topic: Any, _key: Any, value: bytes, _tp: Any) -> None:
        sent.append(json.loads(value))

    c = ConcernCounter.__new__(ConcernCounter)
    c.svc, c.send, c.ingress_bus, c.sign, c.table = svc, send, None, (lambda e: e), Table()
    owned = {TP("sg.events", p) for p in range(12)} | {TP("other-topic", 99)}
    c.app = SimpleNamespace(
        rebalancing=False,
        in_recovery=False,  # type: ignore[assignment]
        assignor=SimpleNamespace(assigned_actives=lambda: owned),
    )
    return c, sent, policy


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> LocalSigners:
    local = LocalSigners(tmp_path_factory.mktemp("signers"))
    for agency, org in ((Agency.POLICE, "NSP"), (Agency.NHS, "RNX"), (Agency.SCHOOL, "900001")):
        local.issue_publisher(agency, org)
    return local


def edited(tmp_path: Path, change: Any, whole: bool = False) -> Partnership:
    """The sample partnership with `change(agreement)` applied to each agreement (or, `whole`,
    `change(document)` to agreements.yaml), loaded as a partnership lead's edit would be (validated)."""
    data = tmp_path / "data"
    shutil.copytree(POLICIES / "data", data)
    doc = yaml.safe_load((data / "agreements.yaml").read_text())
    for agreement in [doc] if whole else doc["agreements"]:
        change(agreement)
    (data / "agreements.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_partnership(data)


def count(c: ConcernCounter, signers: LocalSigners, events: list[dict[str, Any]]) -> None:
    batch = []
    for i, event in enumerate(events):
        topic = f"sg.ingress.{event['source']['agency']}"
        res = ingest(
            json.dumps(signers.sign(event)).encode(),
            KEYRING,
            signers.registry(),
            topic=topic,
            partition=0,
            offset=i,
            timestamp_ms=1,
        )
        assert res.event is not None, res.dead_letter
        batch.append(
            SimpleNamespace(value=res.event.model_dump_json().encode(), message=SimpleNamespace(tp=TP("sg.events", 0)))
        )
    asyncio.run(c.handle(batch, c.svc.router.partnership))  # type: ignore[arg-type]


def three_agencies(s: Synth, child: dict[str, Any], la: str) -> list[dict[str, Any]]:
    """Police, school and NHS report about the child; the attendance names `la` as responsible."""
    return [s.domestic_abuse_incident(child), s.attendance_concern(child), s.unscheduled_care_attendance(child, la=la)]


def reports(c: ConcernCounter) -> list[tuple[str, str]]:
    return sorted((r[1], r[2]) for text in c.table.data.values() for r in json.loads(text)["reports"])


def test_three_agencies_the_mash_may_hear_of_raise_a_concern(signers: LocalSigners) -> None:
    s = Synth(seed=31)
    child = s.child(min_age=6)
    c, sent, _ = counter(PARTNERSHIP)
    count(c, signers, three_agencies(s, child, "N01"))
    assert reports(c) == [
        ("nhs", "nhs.unscheduled_care_attendance"),
        ("police", "police.domestic_abuse_incident"),
        ("school", "school.attendance_concern"),
    ]
    assert [e["payload"]["agencies"] for e in sent] == [["nhs", "police", "school"]]


def test_an_attendance_the_mash_is_refused_by_a_condition_does_not_count(signers: LocalSigners) -> None:
    s = Synth(seed=32)
    child = s.child(min_age=6)
    c, sent, policy = counter(PARTNERSHIP)
    # Southshire is responsible for the child: CP-IS sends the attendance to Southshire only.
    count(c, signers, three_agencies(s, child, "S01"))
    assert ("nhs", "nhs.unscheduled_care_attendance") not in reports(c)
    assert sent == []  # two agencies the MASH may hear of: under the three-agency threshold
    assert {r["recipient"] for r in policy.asked} == {"northshire-csc"}  # policy asked for the MASH only


def test_an_event_version_no_agreement_covers_does_not_count(signers: LocalSigners) -> None:
    s = Synth(seed=33)
    child = s.child(min_age=6)
    c, _, _ = counter(PARTNERSHIP)
    count(c, signers, [s.domestic_abuse_incident_v2(child)])
    assert reports(c) == []


def test_an_agreement_past_its_end_date_no_longer_counts(signers: LocalSigners, tmp_path: Path) -> None:
    s = Synth(seed=34)
    child = s.child(min_age=6)

    def end(agreement: dict[str, Any]) -> None:
        if "school.attendance_concern.v1" in agreement["event_types"] and "northshire-csc" in agreement["recipients"]:
            agreement["valid_from"], agreement["valid_to"] = "2025-01-01", "2026-01-01"

    c, _, _ = counter(edited(tmp_path, end))
    count(c, signers, [s.attendance_concern(child), s.domestic_abuse_incident(child)])
    assert reports(c) == [("police", "police.domestic_abuse_incident")]


def test_with_a_second_concern_recipient_an_event_counts_only_if_both_may_hear_of_it(
    signers: LocalSigners, tmp_path: Path
) -> None:
    s = Synth(seed=35)
    child = s.child(min_age=6)

    def add_police(agreement: dict[str, Any]) -> None:
        if "bus.multi_agency_concern.v1" in agreement["event_types"]:
            agreement["recipients"].append("northshire-police")

    c, _, _ = counter(edited(tmp_path, add_police))
    count(c, signers, three_agencies(s, child, "N01"))
    # The police's own incident counts (the MASH may hear of it too); what the police may not be
    # sent (health, attendance) does not, or the concern would tell them of it.
    assert reports(c) == [("police", "police.domestic_abuse_incident")]


def test_while_opa_cannot_answer_nothing_counts_and_the_batch_is_held_then_counted(signers: LocalSigners) -> None:
    s = Synth(seed=36)
    child = s.child(min_age=6)
    c, _, policy = counter(PARTNERSHIP)
    answer, seen = policy.decide_batch, []

    async def down_twice(requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        seen.append(reports(c))  # what the table held while OPA was asked
        if len(seen) <= 2:
            raise PolicyUnavailable("OPA query failed: ClientConnectorError")
        return await answer(requests, today)

    policy.decide_batch = down_twice  # type: ignore[method-assign]
    count(c, signers, [s.domestic_abuse_incident(child)])
    assert seen == [[], [], []]  # nothing counted before policy answered
    assert reports(c) == [("police", "police.domestic_abuse_incident")]
    assert c.svc.metrics.policy_retries.inc.call_count == 2  # type: ignore[attr-defined]


def test_the_sweep_deletes_a_picture_whose_reports_left_the_window_where_it_was_written(
    signers: LocalSigners,
) -> None:
    from bus.concern.picture import DAY_S, Picture, Report

    c, _, _ = counter(PARTNERSHIP)
    now = int(time.time())
    old = Picture([Report("i-1", "police", "police.domestic_abuse_incident", now - 200 * DAY_S)], {}, 2)
    legacy = Picture([Report("i-2", "police", "police.domestic_abuse_incident", now - 200 * DAY_S)])
    c.table.data.update({"psn:old": old.to_bytes().decode(), "psn:legacy": legacy.to_bytes().decode()})
    asyncio.run(c.sweep())
    assert "psn:old" not in c.table.data
    assert c.table.changelog == [(2, "psn:old", None)]  # a tombstone on its own partition
    assert "psn:legacy" in c.table.data  # no partition recorded: left until it is next touched


def test_the_sweep_leaves_pictures_of_partitions_this_worker_does_not_own_and_waits_out_a_rebalance() -> None:
    from bus.concern.picture import DAY_S, Picture, Report

    c, _, _ = counter(PARTNERSHIP)
    now = int(time.time())
    for key, partition in (("psn:mine", 2), ("psn:standby", 7)):
        old = Picture([Report(key, "police", "police.domestic_abuse_incident", now - 200 * DAY_S)], {}, partition)
        c.table.data[key] = old.to_bytes().decode()
    c.app.assignor.assigned_actives = lambda: {TP("sg.events", 2)}  # type: ignore[attr-defined]
    c.app.rebalancing = True  # type: ignore[attr-defined]
    asyncio.run(c.sweep())
    assert c.table.changelog == []  # mid-rebalance: nothing written
    c.app.rebalancing = False  # type: ignore[attr-defined]
    asyncio.run(c.sweep())
    assert c.table.changelog == [(2, "psn:mine", None)]
    assert "psn:standby" in c.table.data  # another worker's to keep or let go


def test_an_ended_concern_agreement_does_not_hold_back_what_the_mash_may_hear_of(
    signers: LocalSigners, tmp_path: Path
) -> None:
    s = Synth(seed=38)
    child = s.child(min_age=6)

    def add_ended(doc: dict[str, Any]) -> None:
        ended = {
            **next(a for a in doc["agreements"] if a["id"] == "DSA-MAC-001"),
            "id": "DSA-MAC-OLD",
            "recipients": ["northshire-police"],
            "valid_from": "2024-01-01",
            "valid_to": "2025-01-01",
        }
        doc["agreements"].append(ended)

    c, _, _ = counter(edited(tmp_path, add_ended, whole=True))
    count(c, signers, [s.attendance_concern(child)])
    assert reports(c) == [("school", "school.attendance_concern")]


def test_a_history_outside_the_window_leaves_no_picture(signers: LocalSigners) -> None:
    s = Synth(seed=37)
    child = s.child(min_age=6)
    event = s.domestic_abuse_incident(child)
    at = datetime.fromisoformat(event["occurred_at"]) - timedelta(days=200)
    event["occurred_at"], event["recorded_at"] = at.isoformat(), (at + timedelta(minutes=30)).isoformat()
    c, sent, _ = counter(PARTNERSHIP)
    count(c, signers, [event])
    assert c.table.data == {} and sent == []
    assert [value for _, _, value in c.table.changelog] == [None]
