"""Policy tooling as partnership leads use it: check, simulate (no server needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus.policy.simulate import simulate
from schemas.registry import parse_event
from schemas.synthetic import Synth

REPO = Path(__file__).parents[2]


def sgbus(*args: str, policies: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if policies is not None:
        env["SGBUS_POLICIES_DIR"] = str(policies)
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def proposed(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_policy_check_passes_on_the_repository() -> None:
    result = sgbus("policy", "check", policies=REPO / "policies")
    assert result.returncode == 0, result.stderr
    assert "policies OK" in result.stdout


def test_policy_check_fails_on_a_planted_yaml_error_naming_file_and_line(proposed: Path) -> None:
    agreements = proposed / "data" / "agreements.yaml"
    _edit(agreements, "retention_days: 365", "retention_days: forever")
    line = next(i for i, t in enumerate(agreements.read_text().splitlines(), 1) if "forever" in t)
    result = sgbus("policy", "check", policies=proposed)
    assert result.returncode == 1
    assert f"agreements.yaml:{line}: agreements.0.retention_days" in result.stderr


def test_policy_check_fails_on_a_planted_rego_error(proposed: Path) -> None:
    _edit(proposed / "sgbus" / "share" / "share.rego", "input.today < a.valid_from", "input.todya < a.valid_from")
    result = sgbus("policy", "check", policies=proposed)
    assert result.returncode == 1
    assert "todya" in result.stderr and "share.rego" in result.stderr


def test_policy_test_reports_coverage_of_at_least_90_percent() -> None:
    result = sgbus("policy", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    coverage = float(result.stdout.split("coverage: ")[1].split("%")[0])
    assert coverage >= 90


def test_policy_test_holds_the_real_agreements_to_the_partnerships_invariants(proposed: Path) -> None:
    """Found in review: `policy test` tested a made-up partnership only, so a change to the real
    data passed it whatever it did (here: schools given the child's NHS number)."""
    _edit(proposed / "data" / "agreements.yaml", "identifiers: {upn: reveal, nhs_number: drop, police_person_id: drop}",
          "identifiers: {upn: reveal, nhs_number: token, police_person_id: drop}")
    result = sgbus("policy", "test", policies=proposed)
    assert result.returncode == 1
    assert "test_no_agreement_gives_a_school_the_nhs_number" in result.stdout + result.stderr


def test_simulate_shows_a_removed_recipient_and_a_changed_free_text_mode(proposed: Path) -> None:
    agreements = proposed / "data" / "agreements.yaml"
    _edit(agreements, "recipients: [oakfield-primary, riverside-academy]", "recipients: [riverside-academy]")
    _edit(agreements, "free_text: {circumstances: reveal, child_voice: reveal}",
          "free_text: {circumstances: reveal, child_voice: redact}")
    s = Synth(seed=4)
    event = parse_event(json.dumps(s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")))
    result = simulate(REPO / "policies", proposed, [event])
    (change,) = [c for c in result.changes if not c.empty and c.event_id == str(event.event_id)]
    assert change.removed == ["oakfield-primary"]
    assert change.changed == {"northshire-csc": ["free text child_voice: reveal -> redact"]}
    assert result.current_revision != result.proposed_revision
    assert any("oakfield-primary: recipient removed" in line for line in result.render())


def test_simulate_shows_an_added_recipient_and_identifier_mode_change(proposed: Path) -> None:
    agreements = proposed / "data" / "agreements.yaml"
    _edit(agreements, "recipients: [northshire-csc]\n    event_types: [police.domestic_abuse_incident.v1]",
          "recipients: [northshire-csc, southshire-csc]\n    event_types: [police.domestic_abuse_incident.v1]")
    _edit(agreements, "identifiers: {nhs_number: token, upn: token, la_child_id: reveal, police_person_id: token}",
          "identifiers: {nhs_number: reveal, upn: token, la_child_id: reveal, police_person_id: token}")
    s = Synth(seed=5)
    event = parse_event(json.dumps(s.domestic_abuse_incident(s.child(min_age=5))))
    result = simulate(REPO / "policies", proposed, [event])
    (change,) = [c for c in result.changes if not c.empty and c.event_id == str(event.event_id)]
    assert change.added == ["southshire-csc"]
    assert change.changed["northshire-csc"] == ["identifier nhs_number: token -> reveal"]


def test_simulate_shows_a_widened_emergency_section_through_declared_urgent_copies(proposed: Path) -> None:
    """Found in review: synthetic events carry no urgency, so no change to emergency.yaml ever
    showed (widened to schools, across areas, free text revealed: "0 event(s) affected")."""
    _edit(proposed / "data" / "emergency.yaml", "recipient_agencies: [police, social_care]",
          "recipient_agencies: [police, social_care, school]")
    _edit(proposed / "data" / "emergency.yaml", "recipient_purposes: [child-protection]",
          "recipient_purposes: [child-protection, operation-encompass]")
    s = Synth(seed=4)
    event = parse_event(json.dumps(s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")))
    result = simulate(REPO / "policies", proposed, [event])
    urgent = [c for c in result.changes if not c.empty and "declared urgent" in c.event_type]
    assert result.urgent_copies >= 1 and urgent
    assert any("riverside-academy" in c.added for c in urgent)  # a school the override now reaches
    assert any(n.startswith("emergency recipient_agencies:") for n in result.settings)


def test_simulate_shows_an_agreement_that_starts_later_on_its_first_day(proposed: Path) -> None:
    """Found in review: only today was tried, so an agreement starting next week showed nothing."""
    agreements = proposed / "data" / "agreements.yaml"
    _edit(agreements, "recipients: [northshire-csc]\n    event_types: [police.domestic_abuse_incident.v1]",
          "recipients: [northshire-csc, southshire-csc]\n    event_types: [police.domestic_abuse_incident.v1]")
    text = agreements.read_text()
    block = text[text.index("recipients: [northshire-csc, southshire-csc]"):]
    start = block.index("valid_from:")
    old_line = block[start:block.index("\n", start)]
    agreements.write_text(text.replace(block, block.replace(old_line, "valid_from: 2031-01-01", 1), 1))
    s = Synth(seed=5)
    event = parse_event(json.dumps(s.domestic_abuse_incident(s.child(min_age=5))))
    result = simulate(REPO / "policies", proposed, [event], today="2030-06-01")
    days = dict(result.later)
    assert "2031-01-01" in days
    assert any("southshire-csc" in c.added for c in days["2031-01-01"])
    assert any(line.startswith("from 2031-01-01") for line in result.render())


def test_simulate_shows_a_partners_changed_linkage_domain(proposed: Path) -> None:
    """Found in review: a partner moved into another's linkage domain (so its tokens match that
    partner's) changed no decision, and simulate said nothing."""
    _edit(proposed / "data" / "partners.yaml", "linkage_domain: southshire", "linkage_domain: mash")
    result = simulate(REPO / "policies", proposed, [])
    assert "partner southshire-csc: linkage_domain southshire -> mash" in result.settings
    assert any(line == "setting: partner southshire-csc: linkage_domain southshire -> mash" for line in result.render())


def test_simulate_cli_with_no_change_reports_nothing_affected(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in Synth(seed=6).stream(20)) + "\n")
    result = sgbus("policy", "simulate", "--policies", str(REPO / "policies"), "--events", str(events))
    assert result.returncode == 0, result.stderr
    assert "0 event(s) affected" in result.stdout


def test_simulate_cli_names_a_bad_events_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_type": "police.nope.v1"}\n')
    result = sgbus("policy", "simulate", "--policies", str(REPO / "policies"), "--events", str(events))
    assert result.returncode == 2
    assert "--events line 1: event_type" in result.stderr


def test_simulate_names_the_children_who_would_newly_cross_a_lowered_concern_threshold(proposed: Path) -> None:
    from bus.pseudonymise.keyring import Keyring
    from bus.pseudonymise.operators.token import token

    _edit(proposed / "data" / "concern.yaml", "      min_agencies: 3", "      min_agencies: 2")
    s = Synth(seed=7)
    two, one = s.child(min_age=6), s.child(min_age=6)
    events = [parse_event(json.dumps(e)) for e in (
        s.domestic_abuse_incident(two), s.unscheduled_care_attendance(two), s.missing_episode(one))]
    keyring = Keyring.generate()
    result = simulate(REPO / "policies", proposed, events, keyring=keyring)
    mash = token(keyring, "mash", "nhs_number", two["identifiers"]["nhs_number"])
    assert result.concern_newly == [(mash, "three-agencies-90d")]
    assert result.concern_no_longer == []
    assert f"concern: child {mash} would newly cross three-agencies-90d" in result.render()
    # Without the change, nobody moves.
    assert simulate(REPO / "policies", REPO / "policies", events, keyring=keyring).concern_newly == []


def test_simulate_counts_only_what_the_concern_stage_would_count(proposed: Path) -> None:
    """A CP-IS attendance that goes to another authority's MASH only is no part of this MASH's picture."""
    _edit(proposed / "data" / "concern.yaml", "      min_agencies: 3", "      min_agencies: 2")
    s = Synth(seed=8)
    child = s.child(min_age=6)
    events = [parse_event(json.dumps(e)) for e in (
        s.domestic_abuse_incident(child), s.unscheduled_care_attendance(child, la="S01"))]
    assert simulate(REPO / "policies", proposed, events).concern_newly == []
    counted = [parse_event(json.dumps(e)) for e in (
        s.domestic_abuse_incident(child), s.unscheduled_care_attendance(child, la="N01"))]
    assert [rule for _, rule in simulate(REPO / "policies", proposed, counted).concern_newly] == ["three-agencies-90d"]
