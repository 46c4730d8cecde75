"""Policy checks for partnership leads: data validation, opa fmt, opa check, opa test."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from bus import toolchain
from bus.exceptions import PolicyDataError
from bus.policy.data import load_partnership
from schemas.export import OPA_INPUT_SCHEMA, rendered_schemas


def _opa(*args: str) -> subprocess.CompletedProcess[str]:
    opa = toolchain.ensure_opa()
    return subprocess.run([str(opa.path), *args], capture_output=True, text=True, check=False)


def check_policies(policies_dir: Path) -> list[str]:
    """Every problem found, as readable lines; empty when all is well."""
    problems: list[str] = []
    try:
        load_partnership(policies_dir / "data")
    except PolicyDataError as exc:
        problems.extend(str(exc).splitlines())
    if (policies_dir / "data" / "attendance.yaml").exists():  # thresholds of the school-sessions connector
        from connectors.inbound.school_sessions import load_thresholds

        try:
            load_thresholds(policies_dir / "data")
        except ValueError as exc:
            problems.append(str(exc))
    if (policies_dir / "data" / "local_authorities.yaml").exists():  # contact points named by DfE connectors
        from connectors.inbound.cin_census import load_local_authorities

        try:
            load_local_authorities(policies_dir / "data")
        except ValueError as exc:
            problems.append(str(exc))
    rego_dir = str(policies_dir)
    fmt = _opa("fmt", "--list", "--fail", rego_dir)
    if fmt.returncode != 0:
        files = [f for f in fmt.stdout.split() if f]
        problems.extend(f"{f}: not formatted (run `opa fmt -w`)" for f in files)
        if not files:
            problems.append(fmt.stderr.strip())
    # The input schema (generated from schemas/policy_input.py) lets opa check catch typos in
    # input references; it is written to a temporary file so the check needs no export first.
    with tempfile.TemporaryDirectory(prefix="sgbus-schema-") as tmp:
        schema = Path(tmp) / OPA_INPUT_SCHEMA
        schema.write_text(rendered_schemas()[OPA_INPUT_SCHEMA])
        # policies/system (OPA's own API authorisation) sees HTTP requests and sgbus/concern
        # children's pictures, not share requests: each is checked strictly on its own, without
        # the share input schema.
        check = _opa("check", "--strict", "--schema", str(schema), "--ignore", "system", "--ignore", "concern",
                     rego_dir)
    if check.returncode != 0:
        problems.append(check.stderr.strip() or check.stdout.strip())
    for own in (policies_dir / "system", policies_dir / "sgbus" / "concern"):
        if own.is_dir():
            check = _opa("check", "--strict", str(own))
            if check.returncode != 0:
                problems.append(check.stderr.strip() or check.stdout.strip())
    return problems


def run_policy_tests(policies_dir: Path, min_coverage: float = 90.0) -> tuple[bool, str]:
    """(passed, report): opa test with coverage, the real partnership data loaded where the
    signed bundle puts it (data.sgbus.partnership), so tests can hold the partnership's own
    agreements to its invariants (policies/sgbus/share/partnership_test.rego); fails below
    `min_coverage` percent."""
    from bus.policy.bundle import bundle_extra
    from bus.policy.data import load_partnership

    data = {"sgbus": {"partnership": load_partnership(policies_dir / "data").as_opa_data(),
                      "catalogue": bundle_extra(None)["catalogue"]}}
    with tempfile.TemporaryDirectory(prefix="sgbus-policy-test-") as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps(data))
        verbose = _opa("test", str(policies_dir), str(data_file))
        cov = _opa("test", "--coverage", "--format", "json", str(policies_dir), str(data_file))
    if verbose.returncode != 0 or cov.returncode != 0:
        return False, (verbose.stdout + verbose.stderr).strip()
    coverage = float(json.loads(cov.stdout).get("coverage", 0.0))
    report = f"{verbose.stdout.strip()}\ncoverage: {coverage:.1f}% (minimum {min_coverage:.0f}%)"
    return coverage >= min_coverage, report
