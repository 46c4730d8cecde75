"""The concern's pure parts: pictures, the raised event, binding Rego's answer, who may ask for a chronology."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.concern.agent import concern_event, countable, mash_key
from bus.concern.chronology import mash_partner
from bus.concern.decide import bind_concern_decisions
from bus.concern.picture import DAY_S, Picture, Report, concern_event_id, raise_payload, remember_raise, sweep
from bus.concern.rules import ConcernRule
from bus.exceptions import ConfigurationError, PolicyDataError, PolicyUnavailable
from bus.policy.data import load_partnership
from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.token import token
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")
NOW = 1_780_000_000  # mid-2026: in the past, so events built from it validate


def r(i: int, agency: str, event_type: str, days_ago: float) -> Report:
    return Report(f"id-{i}", agency, event_type, int(NOW - days_ago * DAY_S))


def three() -> Picture:
    p = Picture()
    for report in (r(1, "police", "police.domestic_abuse_incident", 10), r(2, "school", "school.attendance_concern", 5),
                   r(3, "nhs", "nhs.unscheduled_care_attendance", 1)):
        p.add(report)
    return p


def test_a_replayed_event_is_counted_once_and_old_reports_leave_the_window() -> None:
    p = three()
    assert not p.add(r(1, "police", "police.domestic_abuse_incident", 10))
    p.add(r(4, "police", "police.missing_episode", 120))
    p.prune(NOW, 90)
    assert [x.ingest_id for x in p.reports] == ["id-1", "id-2", "id-3"]


@given(st.lists(st.tuples(st.sampled_from(["police", "nhs", "school"]), st.integers(0, 200)), max_size=30))
def test_a_picture_survives_its_changelog_form(items: list[tuple[str, int]]) -> None:
    p = Picture()
    for i, (agency, days) in enumerate(items):
        p.add(r(i, agency, f"{agency}.x", days))
    p.raised["rule-one"] = {"agencies": ["nhs"], "event_types": ["nhs.x"], "events": 1, "raised": 1}
    back = Picture.from_bytes(p.to_bytes())
    assert back.reports == p.reports and back.raised == p.raised
    assert Picture.from_bytes(p.to_bytes().decode()).reports == p.reports


def test_the_raised_event_is_a_valid_catalogue_event_with_counts_and_dates_only() -> None:
    p = three()
    payload = raise_payload(p, "three-agencies-90d", 90, NOW)
    s = Synth(seed=3)
    child = s.child(min_age=6)
    identifier = ("nhs_number", child["identifiers"]["nhs_number"])
    event = concern_event("psn:k:abc", "three-agencies-90d", payload, identifier, "SGBUS")
    parsed = parse_event_dict(event)
    # Only the identifier the child is linked by: no name, no date of birth, nothing else.
    assert event["subject"] == {"identifiers": {"nhs_number": child["identifiers"]["nhs_number"]}}
    assert parsed.event_type == "bus.multi_agency_concern.v1"
    assert payload["agencies"] == ["nhs", "police", "school"] and payload["events_in_window"] == 3
    assert payload["raised"] == 1
    assert event["event_id"] == concern_event_id("psn:k:abc", "three-agencies-90d", 1, payload["first_at"])
    # Replayed: the same picture raises the very same event.
    again = raise_payload(p, "three-agencies-90d", 90, NOW)
    assert again is not None and concern_event("psn:k:abc", "three-agencies-90d", again, identifier, "SGBUS") == event
    remember_raise(p, "three-agencies-90d", payload)
    assert (second := raise_payload(p, "three-agencies-90d", 90, NOW)) is not None and second["raised"] == 2


def test_a_child_who_falls_below_and_crosses_again_gets_a_new_event_id() -> None:
    p = three()
    first = raise_payload(p, "three-agencies-90d", 90, NOW)
    assert first is not None
    remember_raise(p, "three-agencies-90d", first)
    assert p.opa_child("k", NOW)["raised"]["three-agencies-90d"]["events"] == 3
    p.rearm("three-agencies-90d")  # below the threshold: Rego sees no earlier raise
    assert p.opa_child("k", NOW)["raised"] == {}
    again = raise_payload(p, "three-agencies-90d", 90, NOW)
    assert again is not None and again["raised"] == 2  # never reused: the event id stays unique
    assert raise_payload(Picture(), "three-agencies-90d", 90, NOW) is None


def test_a_picture_no_new_event_touches_is_pruned_then_let_go_by_the_sweep() -> None:
    old, recent = Picture(partition=3), Picture(partition=5)
    old.add(r(1, "police", "police.domestic_abuse_incident", 80))
    recent.add(r(2, "police", "police.domestic_abuse_incident", 80))
    recent.add(r(3, "school", "school.attendance_concern", 5))
    remember_raise(old, "three-agencies-90d", {"agencies": ["police"], "reports": [], "events_in_window": 1,
                                               "raised": 1})
    untouched = three()
    pictures = {k: p.to_bytes().decode() for k, p in (("a", old), ("b", recent), ("c", untouched))}
    changed, unreadable = sweep({**pictures, "d": "{not json"}, NOW + 20 * DAY_S, 90)  # 20 days on
    assert unreadable == 1  # left as it is, never a stopped worker
    assert set(changed) == {"a", "b"}
    assert changed["a"].empty and changed["a"].partition == 3  # deleted where it was written
    assert [x.ingest_id for x in changed["b"].reports] == ["id-3"] and changed["b"].partition == 5


def test_a_crossing_after_a_picture_was_let_go_gets_an_id_of_its_own() -> None:
    first = raise_payload(three(), "three-agencies-90d", 90, NOW)
    later = Picture()  # the picture was deleted; its raise count starts again
    for report in (r(7, "police", "police.domestic_abuse_incident", -397),  # 400 days on
                   r(8, "school", "school.attendance_concern", -398),
                   r(9, "nhs", "nhs.unscheduled_care_attendance", -399)):
        later.add(report)
    second = raise_payload(later, "three-agencies-90d", 90, NOW + 400 * DAY_S)
    assert first is not None and second is not None and first["raised"] == second["raised"] == 1
    assert concern_event_id("k", "three-agencies-90d", 1, first["first_at"]) != concern_event_id(
        "k", "three-agencies-90d", 1, second["first_at"])


def test_a_flood_about_one_child_is_bounded() -> None:
    from bus.concern.picture import MAX_REPORTS

    p = Picture()
    for i in range(MAX_REPORTS + 50):
        p.add(r(i, "police", "police.missing_episode", 1 + i / 1000))
    assert len(p.reports) == MAX_REPORTS and len(p.to_bytes()) < 100_000


def test_only_what_the_mash_could_be_sent_counts_in_a_picture() -> None:
    shared, own = countable(PARTNERSHIP)
    assert ("police", "NSP", "police.domestic_abuse_incident") in shared
    assert ("nhs", "RNX", "nhs.unscheduled_care_attendance") in shared
    # No agreement sends CAMHS referrals or another authority's events to the MASH.
    assert not any(t == "nhs.camhs_referral_status" for _, _, t in shared)
    assert not any(org == "S01" for _, org, _ in shared)
    assert ("social_care", "N01") in own


def test_the_picture_key_is_the_mash_token_of_the_first_identifier() -> None:
    keyring = Keyring.generate()
    subject = {"identifiers": {"upn": "A123", "nhs_number": "9999999999"}}
    assert mash_key(subject, "mash", keyring) == token(keyring, "mash", "nhs_number", "9999999999")
    assert mash_key({"identifiers": {}}, "mash", keyring) is None
    assert mash_key(subject, "mash", keyring) != mash_key(subject, "education", keyring)


def test_an_answer_that_does_not_match_the_question_fails_closed() -> None:
    children = [{"key": "a"}, {"key": "b"}]
    good = [{"key": k, "rule": "r1", "crossed": False, "raise": False, "reasons": ["x"]} for k in ("a", "b")]
    assert len(bind_concern_decisions(children, ["r1"], good)) == 2
    for bad in (None, good[:1], [*good, {**good[0], "key": "c"}], [{**good[0], "raise": "yes"}, good[1]],
                [{**good[0], "rule": "r2"}, good[1]]):
        with pytest.raises(PolicyUnavailable):
            bind_concern_decisions(children, ["r1"], bad)


def test_only_the_mash_may_ask_for_a_chronology() -> None:
    assert mash_partner(PARTNERSHIP, None).id == "northshire-csc"
    for other in ("oakfield-primary", "northshire-police", "sgbus-concern"):  # the police share the domain, still no
        with pytest.raises(ConfigurationError, match="MASH only"):
            mash_partner(PARTNERSHIP, other)
    with pytest.raises(ConfigurationError, match="unknown partner"):
        mash_partner(PARTNERSHIP, "nobody")


def test_a_rule_needs_something_to_count() -> None:
    with pytest.raises(ValueError, match="min_agencies or require"):
        ConcernRule(id="empty-rule", title="nothing", window_days=30)


def test_a_rule_naming_an_unknown_event_type_is_reported_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(REPO / "policies" / "data", data)
    text = (data / "concern.yaml").read_text().replace("police.missing_episode: 1", "police.missing_episode.v1: 1")
    (data / "concern.yaml").write_text(text)
    with pytest.raises(PolicyDataError, match=r"concern.yaml:\d+: require: unknown event type police.missing_ep"):
        load_partnership(data)


def test_the_concern_event_reaches_only_the_mash_by_agreement() -> None:
    agreements = [a for a in PARTNERSHIP.agreements if "bus.multi_agency_concern.v1" in a.event_types]
    assert [(a.id, a.recipients, a.providers) for a in agreements] == [("DSA-MAC-001", ["northshire-csc"],
                                                                       ["sgbus-concern"])]
    assert "reveal" not in json.dumps(agreements[0].identifiers)
