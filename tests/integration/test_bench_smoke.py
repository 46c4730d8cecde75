"""`python -m bench run --smoke`: the benchmark harness works end to end on a tiny load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_bench_harness_writes_the_report_and_raw_results_on_a_tiny_load(tmp_path: Path) -> None:
    out, results = tmp_path / "BENCHMARKS.md", tmp_path / "results"
    env = {**os.environ, "SGBUS_HOME": str(tmp_path / "home"), "SGBUS_POLICIES_DIR": str(REPO / "policies"),
           "PYTHONPATH": str(REPO)}  # the harness is not installed with the package
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--out", str(out), "--results-dir", str(results)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in results.iterdir()} >= {
        "ceiling.json", "pipe.json", "two_workers.json", "latency.json", "backfill.json", "opa.json", "gateway.json",
        "run.json"}
    pipe = json.loads((results / "pipe.json").read_text())
    ceiling = json.loads((results / "ceiling.json").read_text())
    assert pipe["events_per_s"] > 0 and ceiling["events_per_s"] > 0
    assert pipe["worker_peak_rss_mb"][0] > 10
    backfill = json.loads((results / "backfill.json").read_text())
    assert backfill["zero_loss"] is True and backfill["events_missing"] == 0
    latency = json.loads((results / "latency.json").read_text())["loads"][0]
    assert latency["deliveries_measured"] > 0 and latency["p50_ms"] <= latency["p99_ms"]
    run = json.loads((results / "run.json").read_text())
    assert run["command"] == "python -m bench run --smoke" and run["machine"]["cores"] >= 1
    report = out.read_text()
    gateway = json.loads((results / "gateway.json").read_text())
    assert gateway["paced"]["accepted"] == gateway["paced"]["events"] > 0
    assert gateway["batched"]["accepted"] == gateway["batched"]["events"]
    for heading in ("## Targets", "## Throughput", "## End-to-end latency", "## Backfill", "## OPA",
                    "## HTTPS gateway"):
        assert heading in report
    assert "full pipe / ceiling" in report
