"""The Rego policies pass opa fmt, opa check --strict and opa test with coverage >= 90%."""

import shutil
from pathlib import Path

from bus.policy.tooling import check_policies, run_policy_tests

POLICIES = Path(__file__).parents[2] / "policies"


def test_repository_policies_pass_fmt_check_and_data_validation() -> None:
    assert check_policies(POLICIES) == []


def test_rego_tests_pass_with_coverage_at_least_90_percent() -> None:
    ok, report = run_policy_tests(POLICIES)
    assert ok, report
    assert "coverage:" in report


def test_every_policy_file_has_a_test_file_beside_it() -> None:
    for rego in POLICIES.rglob("*.rego"):
        if not rego.name.endswith("_test.rego"):
            assert rego.with_name(rego.stem + "_test.rego").is_file(), rego


def test_planted_rego_error_fails_the_check(tmp_path: Path) -> None:
    planted = tmp_path / "policies"
    shutil.copytree(POLICIES, planted)
    share = planted / "sgbus" / "share" / "share.rego"
    share.write_text(share.read_text().replace("count(applicable) > 0", "count(applicable) > undefined_thing"))
    problems = check_policies(planted)
    assert any("undefined_thing" in p for p in problems), problems
