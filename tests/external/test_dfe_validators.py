"""The connectors' DfE samples are what the DfE-community validators accept: the CIN census XML
(csc-validator-be-cin) and the SSDA903 tables (csc-validator-be-903) pass every rule, apart from
the one record each sample spoils on purpose, which the validators flag too.

The validators need numpy < 1.25 and pandas < 2 (spaCy needs numpy 2), so they run in a venv of
their own, installed once from requirements/dfe-validators.txt (hash-pinned) under the download
cache, never in the project's environment."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.external

REPO = Path(__file__).parents[2]
REQUIREMENTS = REPO / "requirements" / "dfe-validators.txt"
SAMPLES = REPO / "connectors" / "samples"
SCRIPT = Path(__file__).parent / "dfe_validate.py"


@pytest.fixture(scope="session")
def validators() -> Path:
    """The validators' python, in a venv keyed by the lock file's digest (built once, then cached)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("SGBUS_CACHE_DIR", Path.home() / ".cache" / "sgbus"))
    venv = cache / f"dfe-validators-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                        "--require-hashes", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                       check=True, timeout=900)
        (venv / ".installed").write_text(digest)
    return python


def _issues(python: Path, *args: str) -> list[dict[str, str]]:
    result = subprocess.run([str(python), str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"child"')]


def test_the_cin_census_sample_passes_the_dfe_validator_but_for_its_spoilt_child(validators: Path,
                                                                                tmp_path: Path) -> None:
    sample = (SAMPLES / "cin-census" / "cin-2024-25.xml").read_text()
    clean = tmp_path / "clean.xml"
    clean.write_text(re.sub(r"\s*<Child>\s*<ChildIdentifiers>\s*<LAchildID>SYN0099</LAchildID>.*?</Child>", "",
                            sample, flags=re.S))
    assert _issues(validators, "cin", "cin2024_25", str(clean)) == []
    full = str(SAMPLES / "cin-census" / "cin-2024-25.xml")
    spoilt = {i["rule"] for i in _issues(validators, "cin", "cin2024_25", full)}
    assert {"8905", "8910"} <= spoilt <= {"8905", "8910", "8770Q", "2885"}  # SYN0099's categories, UPN, ICPC


def test_the_ssda903_sample_passes_the_dfe_validator_but_for_its_spoilt_child(validators: Path,
                                                                             tmp_path: Path) -> None:
    tables = SAMPLES / "ssda903" / "return-2026"
    for name in ("Header.csv", "Episodes.csv", "Missing.csv"):
        lines = (tables / name).read_text().splitlines(keepends=True)
        (tmp_path / name).write_text("".join(line for line in lines if not line.startswith("SYN2004,")))
    clean = [str(tmp_path / n) for n in ("Header.csv", "Episodes.csv", "Missing.csv")]
    # 2026-27 collection year (returns are named by the year they end); an ONS code of a real LA
    assert _issues(validators, "903", "2027", "E09000001", *clean) == []
    spoilt = _issues(validators, "903", "2027", "E09000001",
                     *(str(tables / n) for n in ("Header.csv", "Episodes.csv", "Missing.csv")))
    assert {(i["child"], i["rule"]) for i in spoilt} == {("SYN2004", "144")}  # the unknown legal status
