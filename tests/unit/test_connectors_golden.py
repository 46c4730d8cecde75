"""Each connector's golden cases (tests/data/connectors/<name>/case.yaml): a realistic synthetic
file converts to exactly the expected events, and each bad record is rejected by name."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from connectors.base import Context, Converted, Rejection
from connectors.inbound import CONNECTORS, connector_settings

REPO = Path(__file__).parents[2]
CASES = sorted((REPO / "tests" / "data" / "connectors").glob("*/case*.yaml"))


def convert(case_file: Path) -> tuple[list[dict[str, object]], list[str], dict[str, object]]:
    case = yaml.safe_load(case_file.read_text())
    connector = CONNECTORS[case["connector"]]()
    ctx = Context(org_id=str(case["org"]), now=datetime.fromisoformat(case["now"]),
                  settings=connector_settings(case["connector"], REPO / "policies" / "data"))
    source = case_file.parent / case["input"]
    events, rejections = [], []
    for result in connector.convert(source, ctx):
        if isinstance(result, Rejection):
            rejections.append(str(result).removeprefix(f"{source}: "))
        else:
            assert isinstance(result, Converted)
            events.append(result.event)
    return events, rejections, case


def test_every_connector_has_a_golden_case() -> None:
    covered = {yaml.safe_load(c.read_text())["connector"] for c in CASES}
    assert covered == set(CONNECTORS)


@pytest.mark.parametrize("case_file", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_file_converts_to_the_golden_events_and_rejections(case_file: Path) -> None:
    events, rejections, case = convert(case_file)
    expected = [json.loads(line) for line in (case_file.parent / case["expected"]).read_text().splitlines() if line]
    assert events == expected
    assert rejections == case.get("rejections", [])


@pytest.mark.parametrize("case_file", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_conversion_is_deterministic_so_a_redelivered_file_keeps_its_event_ids(case_file: Path) -> None:
    first, _, _ = convert(case_file)
    again, _, _ = convert(case_file)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert len({e["event_id"] for e in first}) == len(first)


@pytest.mark.parametrize("case_file", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_rejections_never_repeat_a_value_from_the_rejected_record(case_file: Path) -> None:
    _, rejections, case = convert(case_file)
    assert case.get("rejections"), "each golden case has at least one bad record"
    for value in case["rejected_values"]:  # the bad records' identifiers, names and bad codes
        assert not [line for line in rejections if str(value) in line], value
