"""`python -m bench`: the whole pipe on a stack of its own, and single parts (outside `sgbus`: the
harness drives the product; the product never imports it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bus.cli_common import err, fail, load_settings, resolve_endpoints

bench_app = typer.Typer(help="Benchmarks: the whole pipe (`run`, its own stack) and single parts.",
                        no_args_is_help=True)


@bench_app.command("run")
def bench_run(
    out: Annotated[Path, typer.Option(help="Markdown report to (re)write")] = Path("docs/BENCHMARKS.md"),
    results_dir: Annotated[Path, typer.Option(help="directory for the raw JSON results")] = Path("bench/results"),
    smoke: Annotated[bool, typer.Option(help="tiny load: checks the harness works, figures mean nothing")] = False,
    events: Annotated[int | None, typer.Option(min=100, help="events per throughput phase")] = None,
    backfill: Annotated[int | None, typer.Option(min=100, help="events in the backfill phase")] = None,
) -> None:
    """Ceiling vs full pipe, latency at 200/1,000/3,000 events/s, one vs two workers, memory,
    a 200,000-event backfill and OPA batching, on a stack of its own (started and stopped here)."""
    import dataclasses

    from bench.pipe import FULL, SMOKE, run_all
    from bench.report import stamp, with_levers, write_markdown, write_results
    from bus.exceptions import StackError

    cfg = SMOKE if smoke else FULL
    if events is not None:
        cfg = dataclasses.replace(cfg, events=events)
    if backfill is not None:
        cfg = dataclasses.replace(cfg, backfill=backfill)
    flags = ["--smoke" if smoke else "", f"--events {events}" if events else "",
             f"--backfill {backfill}" if backfill else ""]
    command = " ".join(["python -m bench run", *[f for f in flags if f]])
    try:
        results = stamp(run_all(cfg, load_settings().policies_dir, results_dir, progress=err), command)
    except StackError as exc:
        fail(f"benchmark failed: {exc}")
    for path in write_results(results, results_dir):
        err(f"wrote {path}")
    write_markdown(with_levers(results, results_dir), out)
    err(f"wrote {out}")


@bench_app.command("core")
def bench_core(
    out: Annotated[Path, typer.Option(help="JSON file for the figures")] = Path("bench/results/core.json"),
    events: Annotated[int, typer.Option(min=100, help="events in the throughput phases")] = 6000,
    label: Annotated[str, typer.Option(help="what this run measures (e.g. the lever tried)")] = "",
) -> None:
    """Only what a performance change moves (~4 min, a stack of its own): ceiling vs one
    worker with its profile, latency at 50 and 200 events/s, idle CPU. Prints the figures."""
    import dataclasses

    from bench.pipe import FULL, run_core
    from bench.report import stamp
    from bus.exceptions import StackError

    cfg = dataclasses.replace(FULL, events=events, loads=(50, 200), load_seconds=(10.0, 10.0))
    try:
        results = stamp(run_core(cfg, load_settings().policies_dir, out.parent, progress=err),
                        f"python -m bench core --events {events}")
    except StackError as exc:
        fail(f"benchmark failed: {exc}")
    results["label"] = label
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    lat = {row["offered_per_s"]: row for row in results["latency"]["loads"]}
    typer.echo(f"ceiling {results['ceiling']['events_per_s']:,} events/s; one worker "
               f"{results['pipe']['events_per_s']:,} ({results['ratio_full_to_ceiling']} x ceiling)")
    if "pipe_one_process" in results:
        second = results["pipe_one_process"]
        typer.echo(f"one worker without helper processes (SGBUS_INGEST_PROCESS=false, SGBUS_AUDIT_PROCESS=false): "
                   f"{second['events_per_s']:,} "
                   f"({second['events_per_s'] / results['ceiling']['events_per_s']:.3f} x ceiling); "
                   f"cores {second['cores_used']}")
    for rate, row in lat.items():
        typer.echo(f"at {rate}/s: p50 {row.get('p50_ms')} ms, p99 {row.get('p99_ms')} ms, "
                   f"processed {row['processed_per_s']}/s")
    typer.echo(f"idle cores: {results['idle']['cores_used']}")
    err(f"wrote {out}")


@bench_app.command("report")
def bench_report(
    out: Annotated[Path, typer.Option(help="Markdown report to (re)write")] = Path("docs/BENCHMARKS.md"),
    results_dir: Annotated[Path, typer.Option(help="directory of the raw JSON results")] = Path("bench/results"),
) -> None:
    """Render the report again from a run's raw results (and levers.json, the runs of
    `python -m bench core` kept for each lever tried), without measuring anything."""
    from bench.report import load_results, write_markdown

    try:
        results = load_results(results_dir)
    except (OSError, ValueError) as exc:
        fail(f"--results-dir: {exc}", 2)
    write_markdown(results, out)
    err(f"wrote {out}")


@bench_app.command("cluster")
def bench_cluster(
    out: Annotated[Path, typer.Option(help="Markdown report whose three-broker section to replace")] = Path(
        "docs/BENCHMARKS.md"),
    results_dir: Annotated[Path, typer.Option(help="directory for the raw JSON results")] = Path("bench/results"),
    events: Annotated[int, typer.Option(min=100, help="events per run")] = 6000,
) -> None:
    """Only the scaling rows on three brokers (`make bench` runs them last): one process per
    stage, then a second route process, on a three-node stack of their own."""
    import dataclasses

    from bench.pipe import FULL, run_cluster_alone
    from bench.report import update_cluster_section
    from bus.exceptions import StackError

    try:
        cluster = run_cluster_alone(dataclasses.replace(FULL, events=events), load_settings().policies_dir, err)
    except StackError as exc:
        fail(f"benchmark failed: {exc}")
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "cluster.json").write_text(json.dumps(cluster, indent=2) + "\n")
    update_cluster_section(out, cluster, f"python -m bench cluster --events {events}")
    err(f"wrote {results_dir / 'cluster.json'} and the three-broker section of {out}")


@bench_app.command("opa")
def bench_opa_cmd(
    batch_sizes: Annotated[str, typer.Option(help="comma-separated requests per query")] = "1,10,100,500",
    seconds: Annotated[float, typer.Option(min=0.5, help="seconds per batch size")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Decisions per second from the stack's OPA: one request per query vs batched."""
    from bench.opa import bench_opa

    try:
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
    except ValueError:
        fail("--batch-sizes: give integers separated by commas, e.g. 1,10,100", 2)
    if not sizes or min(sizes) < 1:
        fail("--batch-sizes: every size must be at least 1", 2)
    from bus.security.resolve import opa_access

    settings = load_settings()
    _, opa_url = resolve_endpoints(settings)
    results = bench_opa(opa_access(settings, opa_url, "worker"), settings.policies_dir, sizes, seconds)
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "decisions_per_s": round(r.decisions_per_s, 1),
                                "ms_per_query": round(r.ms_per_query, 3)} for r in results]))
        return
    typer.echo(f"{'batch':>6} {'queries':>8} {'decisions':>10} {'decisions/s':>12} {'ms/query':>9}")
    for r in results:
        typer.echo(f"{r.batch_size:>6} {r.queries:>8} {r.decisions:>10} "
                   f"{r.decisions_per_s:>12.0f} {r.ms_per_query:>9.2f}")


@bench_app.command("redaction")
def bench_redaction_cmd(
    count: Annotated[int, typer.Option(min=1, help="texts in the labelled synthetic corpus")] = 2000,
    seed: Annotated[int, typer.Option(help="corpus seed")] = 1,
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="score this labelled corpus (JSON lines: text, subject_names, "
                         "spans [[start, end, KIND]]) instead of the generated one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="recall per kind, precision, overall recall")] = False,
) -> None:
    """Recall and precision of free-text redaction: a span counts as found when one redacted
    span covers it; precision is the share of redacted spans that touch a labelled one."""
    from bench.redaction import CorpusError, load_corpus, make_corpus, measure

    try:
        samples = load_corpus(corpus) if corpus is not None else make_corpus(count, seed)
    except (CorpusError, OSError) as exc:
        fail(f"--corpus: {exc}", 2)
    report = measure(samples)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in report.lines():
        typer.echo(line)


@bench_app.command("pseudonymise")
def bench_pseudonymise_cmd(
    count: Annotated[int, typer.Option(min=100, help="typical events to process")] = 5000,
) -> None:
    """Events per second on one core: ingest pseudonymisation and one recipient view."""
    from bench.pseudonymise import bench_pseudonymise

    for r in bench_pseudonymise(count):
        typer.echo(f"{r.stage:<55} {r.per_s:>9.0f} events/s ({r.events} in {r.seconds:.2f}s)")
