"""Pure parts of the benchmark harness: percentiles, the profile summary, and workers stopped
when a run cannot start."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bench.load import percentile
from bench.pipe import Proc, start_workers
from bench.profile import summarise_collapsed
from bus.exceptions import StackError


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_profile_summary_attributes_samples_to_stages_and_leaf_functions() -> None:
    text = "\n".join([
        # a batch finished in a task of its own (the pipelined ingest), routed at ingest
        "_run (asyncio/events.py:1);finish (bus/agents/pipeline.py:290);ingest_prepared (bus/agents/pipeline.py:180);"
        "route_events (bus/agents/pipeline.py:340);recipient_view (bus/pseudonymise/engine.py:9) 30",
        "main (bus/cli.py:1);audit_agent (bus/agents/pipeline.py:400);append (bus/audit/chain.py:238) 10",
        "main (bus/cli.py:1);write (/usr/lib/python3.11/asyncio/selector_events.py:1) 60",
    ])
    summary = summarise_collapsed(text)
    stages = {s["stage"].strip(): s["share"] for s in summary["stages"]}
    assert summary["samples"] == 100
    assert stages["ingest: register, send and route each batch"] == 0.3
    assert stages["route: decide, views, audit records, sends"] == 0.3
    assert stages["recipient views"] == 0.3
    assert stages["audit agent + hash-chained store"] == 0.1
    assert stages["route agent (replays; stage workers)"] == 0.0
    assert summary["self_top"][0] == {"function": "write (asyncio/selector_events.py)", "share": 0.6}


def test_latency_hops_split_each_delivery_at_sg_events_and_at_its_copy() -> None:
    from bench.load import hops

    sent = {"e1": 100.000, "e2": 100.010}
    stamps = [("e1", "sg.events", 100.030, 100.031),
              ("e1", "sg.events", 100.045, 100.046),  # a repeat (at least once): the first counts
              ("e1", "sg.deliver.a", 100.040, 100.055),
              ("e1", "sg.deliver.b", 100.042, 100.050),
              ("e2", "sg.deliver.a", 100.050, 100.060),  # its sg.events record not read: no hops
              ("e3", "sg.events", 100.0, 100.1)]  # not sent in this load
    out = hops(sent, stamps, "sg.events")
    assert [round(v) for v in out["to_events"]] == [30, 30]
    assert [round(v) for v in out["to_copy"]] == [10, 12]
    assert [round(v) for v in out["to_receipt"]] == [15, 8]


def test_three_broker_rows_replace_their_own_section_only(tmp_path: Path) -> None:
    from bench.report import CLUSTER_BEGIN, CLUSTER_END, update_cluster_section

    run = {"events": 6000, "events_per_s": 300.0, "worker_peak_rss_mb": [200.0], "cores_used": {"kafka": 0.5}}
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Throughput\n\nrows\n\n## End-to-end latency (publish)\n\nlatency rows\n")
    update_cluster_section(report, {"brokers": 3, "one_route": run, "two_route": {**run, "events_per_s": 450.0}},
                           "python -m bench cluster --events 6000")
    first = report.read_text()
    assert first.index("## Throughput") < first.index(CLUSTER_BEGIN) < first.index("## End-to-end latency")
    assert "Two route processes vs one: 1.50x" in first and "latency rows" in first
    update_cluster_section(report, {"brokers": 3, "one_route": run, "two_route": run}, "python -m bench cluster")
    second = report.read_text()
    assert second.count(CLUSTER_BEGIN) == 1 and second.count(CLUSTER_END) == 1
    assert "1.00x" in second and "1.50x" not in second and "latency rows" in second


def test_the_product_package_never_imports_the_benchmark_harness() -> None:
    repo = Path(__file__).parents[2]
    offenders = [str(p.relative_to(repo)) for p in (repo / "bus").rglob("*.py")
                 if "from bench" in p.read_text() or "import bench" in p.read_text()]
    assert offenders == []


def test_a_new_run_s_report_keeps_the_levers_tried(tmp_path: Path) -> None:
    """`make bench` rewrites the report; the levers section comes from levers.json, kept by hand."""
    from bench.report import load_results, render, with_levers

    repo_results = Path(__file__).parents[2] / "bench" / "results"
    run = {k: v for k, v in load_results(repo_results).items() if k != "levers"}  # what a run returns
    assert "## Levers tried" not in render(run)
    (tmp_path / "levers.json").write_text((repo_results / "levers.json").read_text())
    assert "## Levers tried (issue 19)" in render(with_levers(run, tmp_path))
    assert with_levers(run, tmp_path / "nowhere") == run


def test_the_report_shows_the_all_in_one_backfill_beside_the_stages_one() -> None:
    """Operators choosing how to drain a backlog see both: one process per stage (exactly-once)
    and one all-in-one worker, on the same backlog."""
    from bench.report import load_results, render

    repo_results = Path(__file__).parents[2] / "bench" / "results"
    run = {k: v for k, v in load_results(repo_results).items() if k != "backfill_all_in_one"}
    stages = run["backfill"]
    assert stages["workers"] == "one per stage"
    alone = {**stages, "workers": 1, "seconds_from_worker_start": 123.4, "worker_peak_rss_mb": [150.0],
             "helper_peak_rss_mb": {}}
    text = render({**run, "backfill_all_in_one": alone})
    section = text.split("## Backfill", 1)[1].split("\n## ", 1)[0]
    assert "(one process per stage, exactly-once)" in section
    assert "(1 all-in-one process(es))" in section and "**123.4 s**" in section
    assert "1 all-in-one" not in render(run).split("## Backfill", 1)[1].split("\n## ", 1)[0]


def test_a_run_s_results_replace_an_older_run_s_phases_it_did_not_measure(tmp_path: Path) -> None:
    """`bench report` renders what is in the results directory: a phase left from an older run
    (a smoke run has no all-in-one backfill, say) would be shown as if this run had measured it."""
    from bench.report import load_results, write_results

    write_results({"pipe": {"events_per_s": 1.0}, "backfill_all_in_one": {"events": 9}}, tmp_path)
    written = write_results({"pipe": {"events_per_s": 2.0}}, tmp_path)
    assert not (tmp_path / "backfill_all_in_one.json").exists()
    assert {p.name for p in written} == {"pipe.json", "run.json"}
    (tmp_path / "levers.json").write_text("{}\n")  # kept by hand, never a phase: untouched
    write_results({}, tmp_path)
    assert (tmp_path / "levers.json").exists()
    assert "backfill_all_in_one" not in load_results(tmp_path)


class _NeverSettles:
    """A harness whose stage workers are plain processes, one of which exits at once, and whose
    consumer groups never become stable (as in a three-broker run whose ingest stage died)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def spawn(self, module: str, app_id: str, stage: str | None = None, env: dict[str, str] | None = None) -> Proc:
        log = self.home / f"{stage}.log"
        log.write_text(f"{stage} started\n{stage}: the reason it stopped\n" if stage == "ingest" else "")
        cmd = ["false"] if stage == "ingest" else ["sleep", "120"]
        return Proc(subprocess.Popen(cmd), self.home / "audit.db", log, stage)

    def wait_group(self, group: str, members: int, timeout_s: float = 120.0) -> None:
        time.sleep(0.2)  # time for the ingest stage's process to exit
        raise StackError(f"consumer group {group} did not reach {members} stable member(s)")


def test_workers_started_for_a_run_whose_group_never_settles_are_stopped_and_the_dead_one_named(
        tmp_path: Path) -> None:
    started: list[Proc] = []
    harness = _NeverSettles(tmp_path)
    spawn = harness.spawn
    harness.spawn = lambda *a, **k: started.append(spawn(*a, **k)) or started[-1]  # type: ignore[method-assign]
    with pytest.raises(StackError) as failed:
        start_workers(harness, "bus", "bench-x", 1, stages=True)  # type: ignore[arg-type]
    assert len(started) == 3 and all(p.popen.poll() is not None for p in started)  # none left running
    assert "ingest exited with code 1" in str(failed.value) and "the reason it stopped" in str(failed.value)
