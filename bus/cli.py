"""The `sgbus` command line. Exit codes: 0 ok, 1 failure, 2 bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bus.exceptions import SgbusError
from bus.settings import Settings

app = typer.Typer(help="sgbus: the secure multi-agency safeguarding event bus.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
stack_app = typer.Typer(help="Start, stop and inspect the local Kafka + OPA stack.", no_args_is_help=True)
policy_app = typer.Typer(help="Check, test and reload the data-sharing policies.", no_args_is_help=True)
keys_app = typer.Typer(help="Create and rotate pseudonymisation keys.", no_args_is_help=True)
schemas_app = typer.Typer(help="Export the event contracts.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(policy_app, name="policy")
app.add_typer(keys_app, name="keys")
app.add_typer(schemas_app, name="schemas")
audit_app = typer.Typer(help="Verify the audit chain and answer who received what about a child.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    _err(f"error: {message}")
    raise typer.Exit(code)


def _settings() -> Settings:
    return Settings()


def _stack(settings: Settings, quiet: bool = False):  # type: ignore[no-untyped-def]
    from bus.stack import Stack

    return Stack(settings.home, settings.policies_dir, progress=(lambda _m: None) if quiet else _err)


def resolve_endpoints(settings: Settings) -> tuple[str, str]:
    """Kafka bootstrap and OPA URL from SGBUS_* settings, else from the running local stack."""
    from bus.stack import read_endpoints

    bootstrap, opa_url = settings.kafka_bootstrap, settings.opa_url
    if bootstrap is None or opa_url is None:
        local_bootstrap, local_opa = read_endpoints(settings.home)
        bootstrap = bootstrap or local_bootstrap
        opa_url = opa_url or local_opa
    if bootstrap is None or opa_url is None:
        _fail(f"the local stack is not running under {settings.home}; run `sgbus stack up` "
              "(or set SGBUS_KAFKA_BOOTSTRAP and SGBUS_OPA_URL)")
    return bootstrap, opa_url


def _kafka(settings: Settings, bootstrap: str, principal: str):  # type: ignore[no-untyped-def]
    """Kafka access as `principal` (see bus/security/resolve.py); configuration errors exit 2."""
    from bus.exceptions import ConfigurationError
    from bus.security.resolve import kafka_access

    try:
        return kafka_access(settings, bootstrap, principal)
    except ConfigurationError as exc:
        _fail(str(exc), 2)


# -- stack ----------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(as_json: Annotated[bool, typer.Option("--json", help="print status as JSON")] = False) -> None:
    """Start Kafka (KRaft) and OPA on free loopback ports, load policies, create topics."""
    settings = _settings()
    status, started = _stack(settings).up()
    if as_json:
        typer.echo(json.dumps(status))
    elif started:
        typer.echo(f"started {', '.join(started)}: kafka {status['kafka_bootstrap']}, opa {status['opa_url']}")
        typer.echo(f"state and logs in {status['home']}; stop with `sgbus stack down`")
    else:
        typer.echo(f"already running: kafka {status['kafka_bootstrap']}, opa {status['opa_url']} (nothing to do)")


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly the processes `sgbus stack up` started (by recorded pid)."""
    stopped = _stack(_settings()).down()
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json", help="print status as JSON")] = False) -> None:
    """Show whether Kafka and OPA are running, their endpoints, pids and logs."""
    status = _stack(_settings(), quiet=True).status()
    if as_json:
        typer.echo(json.dumps(status))
        return
    for name in ("kafka", "opa"):
        info = status[name]
        if info["alive"]:
            typer.echo(f"{name}: running (pid {info['pid']}, port {info['port']}, log {info['log']})")
        else:
            typer.echo(f"{name}: stopped")
    if not status["running"]:
        raise typer.Exit(1)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch, verify and cache the pinned Kafka jars and OPA binary (done by `up` too)."""
    from bus import toolchain

    libs, opa = toolchain.ensure_all(_err)
    typer.echo(f"kafka {toolchain.KAFKA_VERSION}: {libs}")
    typer.echo(f"opa {opa.version}: {opa.path}")


# -- worker, publish, tail, demo -------------------------------------------------------------
@app.command()
def worker(
    stage: Annotated[str, typer.Option(
        help="all: every agent in this process (at-least-once); ingest, route or audit: that stage "
             "only, with Kafka transactions (exactly-once); run one process per stage")] = "all",
) -> None:
    """Run the Faust agents (ingest -> route -> deliver + audit) until stopped."""
    from bus.audit.chain import AuditStoreError
    from bus.worker import run_worker

    if stage not in ("all", "ingest", "route", "audit"):
        _fail(f"--stage: one of all, ingest, route, audit (not {stage})", 2)
    settings = _settings()
    bootstrap, opa_url = resolve_endpoints(settings)
    try:
        run_worker(settings, bootstrap, opa_url, stage)
    except AuditStoreError as exc:
        _fail(str(exc))


@app.command()
def publish(
    file: Annotated[str, typer.Argument(help="file of event JSON, one per line, or - for stdin")],
    skip_invalid: Annotated[bool, typer.Option(help="publish the valid lines even if some are invalid")] = False,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", help="the organisation's private key file (from `sgbus partners keys issue --out`); "
                              "default: the local stack's key for each line's source.org_id")] = None,
) -> None:
    """Validate events, sign them and publish them to sg.ingress.<agency> (idempotent producer).

    Lines that already carry a `signature` are published as they are. By default nothing is
    published when any line is invalid; each invalid line is reported with the field that
    failed, and the exit code is 2."""
    from bus.kafka_io import idempotent_producer, iter_lines, produce_all
    from bus.topics import ingress_topic
    from schemas.registry import InvalidEvent, parse_event

    settings = _settings()
    stream = sys.stdin if file == "-" else None
    if stream is None:
        path = Path(file)
        if not path.is_file():
            _fail(f"no such file: {file}", 2)
        stream = path.open()
    from bus.policy.data import load_partnership
    from bus.security.principals import publisher_for_org

    partnership = load_partnership(settings.policies_dir / "data")
    # Each organisation publishes as its own principal (only its agency's ingress topic);
    # with SGBUS_KAFKA_USERNAME set, every line goes out as that one publisher.
    from bus.exceptions import ConfigurationError
    from bus.provenance.registry import LocalSigners, load_private_key

    sign: Callable[[dict[str, Any]], dict[str, Any]] = LocalSigners(settings.home).sign
    if signing_key is not None:
        try:
            sign = load_private_key(signing_key)
        except ConfigurationError as exc:
            _fail(str(exc), 2)
    records: dict[str, list[tuple[str, bytes, bytes]]] = {}
    bad = 0
    for number, line in iter_lines(iter(stream)):
        try:
            event = parse_event(line)
            if not event.signature:
                line = json.dumps(sign(json.loads(line)))
        except InvalidEvent as exc:
            bad += 1
            first = exc.problems[0]
            _err(f"line {number}: {first.field}: {first.message} [{first.code}]")
            continue
        except ConfigurationError as exc:
            bad += 1
            _err(f"line {number}: signature: {exc} [no_signing_key]")
            continue
        principal = publisher_for_org(partnership, event.source.org_id)
        if principal is None and not settings.kafka_username:
            bad += 1
            _err(f"line {number}: source.org_id: no partner in the partnership data has this org_id, "
                 "so no publisher may send it [unknown_publisher]")
            continue
        records.setdefault(principal or "", []).append(
            (ingress_topic(event.source.agency), event.partition_key(), line.encode()))
    if bad and not skip_invalid:
        _err(f"{bad} invalid line(s); nothing published")
        raise typer.Exit(2)
    bootstrap, _ = resolve_endpoints(settings)
    count = 0
    for principal, batch in records.items():
        count += produce_all(idempotent_producer(_kafka(settings, bootstrap, principal)), batch)
    typer.echo(f"published {count} event(s)" + (f"; skipped {bad} invalid" if bad else ""), err=True)
    if bad:
        raise typer.Exit(2)


@app.command()
def replay(
    failed: Annotated[bool, typer.Option("--failed", help="shares allowed but not delivered (view_failed)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be replayed; send nothing")] = False,
) -> None:
    """Route again what the bus kept for replay. `--failed`: every allowed share whose view
    could not be built (e.g. a key the worker lacked), unless delivered since; each event goes
    back on sg.events for its missed recipients only, and is decided and audited again."""
    from bus.replay import replay_failed
    from bus.security.principals import ADMIN

    if not failed:
        _fail("say what to replay: --failed", 2)
    settings = _settings()
    bootstrap, _ = resolve_endpoints(settings)
    report = replay_failed(_kafka(settings, bootstrap, ADMIN), _audit_store(settings), dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{report.failed} failed view(s) in sg.dlq; {report.already_delivered} delivered since; "
               f"{verb} {report.replayed_shares} share(s) of {report.replayed_events} event(s)")
    if report.missing:
        _err(f"{len(report.missing)} event(s) no longer on sg.events (retention): ingest ids "
             + ", ".join(report.missing[:5]))
        raise typer.Exit(1)


@app.command()
def tail(
    partner: Annotated[str, typer.Argument(help="partner id, e.g. northshire-csc")],
    max_: Annotated[int | None, typer.Option("--max", help="stop after N events")] = None,
    timeout: Annotated[float, typer.Option(help="stop after S seconds")] = 10.0,
) -> None:
    """Print the events delivered to PARTNER (from the beginning) as JSON lines, read with that
    partner's own credentials (as its system would)."""
    from bus.kafka_io import read_topic
    from bus.policy.data import load_partnership
    from bus.security.principals import partner_group_prefix, partner_name
    from bus.topics import deliver_topic

    settings = _settings()
    if load_partnership(settings.policies_dir / "data").partner(partner) is None:
        _fail(f"partner: unknown partner {partner} (not in {settings.policies_dir / 'data' / 'partners.yaml'})", 2)
    bootstrap, _ = resolve_endpoints(settings)
    try:
        access = _kafka(settings, bootstrap, partner_name(partner))
        values = read_topic(access, deliver_topic(partner), max_messages=max_, timeout_s=timeout,
                            group=partner_group_prefix(partner) + "tail")
    except SgbusError:
        _fail(f"partner: unknown partner {partner} (no credentials or no topic {deliver_topic(partner)})", 2)
    for value in values:
        typer.echo(value.decode())
    _err(f"{len(values)} event(s) delivered to {partner}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="seed of the synthetic events")] = 1,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every decision")] = 180.0,
) -> None:
    """Stack + worker + synthetic Operation Encompass and CP-IS events; prints who got what."""
    from bus.demo import run_demo

    raise typer.Exit(run_demo(_settings(), seed=seed, timeout_s=timeout, echo=typer.echo, err=_err))


# -- policy -----------------------------------------------------------------------------------
@policy_app.command("check")
def policy_check() -> None:
    """Validate policy data (YAML) and the Rego: opa fmt and opa check --strict."""
    from bus.policy.tooling import check_policies

    problems = check_policies(_settings().policies_dir)
    if problems:
        for p in problems:
            _err(p)
        raise typer.Exit(1)
    typer.echo("policies OK")


@policy_app.command("test")
def policy_test() -> None:
    """Run the Rego tests (opa test) with coverage."""
    from bus.policy.tooling import run_policy_tests

    ok, output = run_policy_tests(_settings().policies_dir)
    typer.echo(output)
    if not ok:
        raise typer.Exit(1)


@policy_app.command("reload")
def policy_reload() -> None:
    """Validate the policies and data, build and sign the policy bundle, and restart the local
    stack's OPA with it (running workers hold their batches meanwhile and pick the new revision
    up); prints the new revision."""
    settings = _settings()
    if settings.opa_url is not None:
        _fail("policy reload restarts the local stack's OPA; for an OPA run elsewhere, build the signed "
              "bundle with `sgbus policy bundle --out FILE` and serve it from that OPA's bundle service", 2)
    stack = _stack(settings, quiet=True)
    if not stack.status()["opa"]["alive"]:
        _fail(f"OPA is not running under {settings.home}; run `sgbus stack up`")
    revision = stack.reload_policies()
    typer.echo(f"loaded revision {revision} (signed bundle {settings.home / 'opa' / 'policies.tar.gz'})")


@policy_app.command("bundle")
def policy_bundle(
    out: Annotated[Path, typer.Option("--out", help="where to write the signed bundle (.tar.gz)")],
) -> None:
    """Build the policy bundle, signed with the partnership's policy key, for an OPA that loads
    bundles from a bundle service; its verification key is printed."""
    from bus.policy.bundle import build_bundle, ensure_policy_key
    from bus.security.opa_auth import token_hashes

    settings = _settings()
    key = ensure_policy_key(settings.home)
    bundle = build_bundle(settings.policies_dir, out, key, token_hashes(settings.home))
    typer.echo(f"wrote {bundle.path}: revision {bundle.revision}, signed ES256; verification key {key.public}")


@policy_app.command("simulate")
def policy_simulate(
    policies: Annotated[Path, typer.Option("--policies", help="the proposed policy set (a policies/ folder)")],
    events: Annotated[Path, typer.Option("--events", help="events to try, JSON lines (e.g. from sgbus synth)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the changes as JSON")] = False,
    today: Annotated[str | None, typer.Option(help="date agreements are checked against (default today)")] = None,
) -> None:
    """Show what a proposed policy set would change: per event, recipients added or removed and
    fields, identifier modes or demographics changed. Nothing is loaded into OPA."""
    from bus.policy.simulate import simulate
    from schemas.registry import InvalidEvent, parse_event

    if not (policies / "data").is_dir():
        _fail(f"--policies: {policies} is not a policies folder (no data/ inside)", 2)
    if not events.is_file():
        _fail(f"--events: no such file: {events}", 2)
    parsed = []
    for number, line in enumerate(events.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(parse_event(line))
        except InvalidEvent as exc:
            p = exc.problems[0]
            _fail(f"--events line {number}: {p.field}: {p.message} [{p.code}]", 2)
    result = simulate(_settings().policies_dir, policies, parsed, today)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        for line in result.render():
            typer.echo(line)


bench_app = typer.Typer(help="Benchmarks: the whole pipe (`run`, its own stack) and single parts.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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

    from bus.bench.pipe import FULL, SMOKE, run_all
    from bus.bench.report import stamp, write_markdown, write_results
    from bus.exceptions import StackError

    cfg = SMOKE if smoke else FULL
    if events is not None:
        cfg = dataclasses.replace(cfg, events=events)
    if backfill is not None:
        cfg = dataclasses.replace(cfg, backfill=backfill)
    flags = ["--smoke" if smoke else "", f"--events {events}" if events else "",
             f"--backfill {backfill}" if backfill else ""]
    command = " ".join(["sgbus bench run", *[f for f in flags if f]])
    try:
        results = stamp(run_all(cfg, _settings().policies_dir, results_dir, progress=_err), command)
    except StackError as exc:
        _fail(f"benchmark failed: {exc}")
    for path in write_results(results, results_dir):
        _err(f"wrote {path}")
    write_markdown(results, out)
    _err(f"wrote {out}")


@bench_app.command("opa")
def bench_opa_cmd(
    batch_sizes: Annotated[str, typer.Option(help="comma-separated requests per query")] = "1,10,100,500",
    seconds: Annotated[float, typer.Option(min=0.5, help="seconds per batch size")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Decisions per second from the stack's OPA: one request per query vs batched."""
    from bus.bench.opa import bench_opa

    try:
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
    except ValueError:
        _fail("--batch-sizes: give integers separated by commas, e.g. 1,10,100", 2)
    if not sizes or min(sizes) < 1:
        _fail("--batch-sizes: every size must be at least 1", 2)
    from bus.security.resolve import opa_access

    settings = _settings()
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
    from bus.bench.redaction import CorpusError, load_corpus, make_corpus, measure

    try:
        samples = load_corpus(corpus) if corpus is not None else make_corpus(count, seed)
    except (CorpusError, OSError) as exc:
        _fail(f"--corpus: {exc}", 2)
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
    from bus.bench.pseudonymise import bench_pseudonymise

    for r in bench_pseudonymise(count):
        typer.echo(f"{r.stage:<55} {r.per_s:>9.0f} events/s ({r.events} in {r.seconds:.2f}s)")


deliver_app = typer.Typer(help="Deliver a partner's events to its systems (webhook, file drop).",
                          no_args_is_help=True)
app.add_typer(deliver_app, name="deliver")


def _run_delivery(partner: str, sink, max_events: int | None, idle_timeout: float | None) -> None:  # type: ignore[no-untyped-def]
    import signal

    from bus.security.principals import delivery_name
    from connectors.delivery.base import run_delivery

    settings = _settings()
    bootstrap, _ = resolve_endpoints(settings)
    access = _kafka(settings, bootstrap, delivery_name(partner))
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    stats = run_delivery(access=access, partner=partner, sink=sink, state_dir=settings.home / "delivery",
                         max_events=max_events, idle_timeout_s=idle_timeout, should_stop=lambda: stopping["now"])
    _err(f"delivered {stats.delivered}, dead-lettered {stats.dead_lettered}, "
         f"skipped {stats.duplicates_skipped} duplicate(s)")


@deliver_app.command("webhook")
def deliver_webhook(
    partner: Annotated[str, typer.Argument(help="partner id")],
    url: Annotated[str, typer.Option(help="the partner's HTTPS endpoint")],
    secret_env: Annotated[str, typer.Option(help="environment variable holding the HMAC secret")] = (
        "SGBUS_WEBHOOK_SECRET"  # noqa: S107 - the name of a variable, not a secret
    ),
    max_events: Annotated[int | None, typer.Option("--max", help="stop after N events")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="stop after S seconds with nothing new")] = None,
) -> None:
    """POST each event (HMAC-SHA256 signed, timestamped); retry 5xx/timeouts with backoff and
    jitter; 4xx goes to sg.dlq. Runs until stopped."""
    from connectors.delivery.webhook import WebhookSink

    secret = os.environ.get(secret_env)
    if not secret:
        _fail(f"--secret-env: set {secret_env} to the secret shared with the partner", 2)
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        _fail("--url: use https:// (plain http only for a local test endpoint)", 2)
    _run_delivery(partner, WebhookSink(url, secret.encode()), max_events, idle_timeout)


@deliver_app.command("file")
def deliver_file(
    partner: Annotated[str, typer.Argument(help="partner id")],
    directory: Annotated[Path, typer.Option("--dir", help="drop directory")],
    max_events: Annotated[int | None, typer.Option("--max", help="stop after N events")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="stop after S seconds with nothing new")] = None,
) -> None:
    """Write events as JSON-lines files, each written whole and renamed into DIR."""
    from connectors.delivery.filedrop import FileDropSink

    _run_delivery(partner, FileDropSink(directory, partner), max_events, idle_timeout)


# -- audit ------------------------------------------------------------------------------------
def _audit_store(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.audit.chain import AuditStoreError, open_audit_store

    if settings.audit_dsn is None and not settings.audit_db_path.is_file():
        _fail(f"no audit store at {settings.audit_db_path} (run the worker first, or set SGBUS_AUDIT_DB "
              "or SGBUS_AUDIT_DSN)")
    try:
        return open_audit_store(settings)
    except AuditStoreError as exc:
        _fail(str(exc))


def _keyring(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.pseudonymise.keyring import keyring_from_settings

    secret = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    return keyring_from_settings(settings.keyring_path, secret)


@audit_app.command("verify")
def audit_verify(
    public_keys: Annotated[Path | None, typer.Option(
        "--public-keys", help="audit public keys (JSON); default: SGBUS_AUDIT_PUBLIC_KEYS or "
                              "$SGBUS_HOME/audit-signing/public-keys.json")] = None,
    head_file: Annotated[Path | None, typer.Option(
        "--head", help="check against this saved head (JSON from `sgbus audit head`) instead of "
                       "reading sg.audit.heads")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="do not read the published head (weaker: a removed tail can go unnoticed)")] = False,
) -> None:
    """Check the hash chain, its columns and its signed checkpoints with the public key only,
    against the latest head published on sg.audit.heads; name the first bad record."""
    from bus.audit.chain import Checkpoint, verify
    from bus.audit.signer import load_verifier, public_keys_path
    from bus.exceptions import KeyringError

    settings = _settings()
    try:
        verifier = load_verifier(public_keys or settings.audit_public_keys or public_keys_path(settings.home))
    except KeyringError as exc:
        _fail(str(exc), 2)
    published = None
    if head_file is not None:
        try:
            published = Checkpoint.from_json(head_file.read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            _fail(f"--head: {head_file} is not a saved audit head", 2)
    elif not offline:
        published = _published_head(settings)
    result = verify(_audit_store(settings), verifier, published)
    if result.ok:
        against = (f"matches the published head at record {result.published_seq}" if published
                   else "NOT checked against a published head")
        typer.echo(f"audit OK: {result.records} records, {result.checkpoints} signed checkpoints, "
                   f"head {result.head[:16]}; {against}")
        return
    _err(f"audit FAILED: {result.problem}")
    raise typer.Exit(1)


def _published_head(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.audit.heads import latest_head
    from bus.exceptions import StackError
    from bus.security.principals import ADMIN

    bootstrap = settings.kafka_bootstrap or resolve_endpoints(settings)[0]
    try:
        return latest_head(_kafka(settings, bootstrap, ADMIN))
    except StackError as exc:
        _fail(f"cannot read the published audit heads: {exc} (use --head FILE or --offline)")


@audit_app.command("head")
def audit_head() -> None:
    """Print the latest signed audit head published on sg.audit.heads (JSON), to keep and
    verify against later with `sgbus audit verify --head FILE`."""
    head = _published_head(_settings())
    if head is None:
        _fail("no audit head has been published yet")
    typer.echo(head.to_json().decode())


@audit_app.command("trail")
def audit_trail(
    nhs_number: Annotated[str | None, typer.Option("--nhs-number", help="the child's NHS number")] = None,
    token: Annotated[str | None, typer.Option("--token", help="a controller token (psn:...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON lines")] = False,
) -> None:
    """Who received what about a child, when, under which agreement, lawful basis and policy
    revision, and which shares were denied and why."""
    from bus.audit.trail import render, subject_tokens, trail
    from schemas.identifiers import nhs_number_is_valid

    if (nhs_number is None) == (token is None):
        _fail("give exactly one of --nhs-number or --token", 2)
    settings = _settings()
    if nhs_number is not None:
        nhs = nhs_number.replace(" ", "").replace("-", "")
        if not nhs_number_is_valid(nhs):
            _fail("--nhs-number: not a valid NHS number (10 digits with a modulus 11 check digit)", 2)
        tokens = subject_tokens(_keyring(settings), "nhs_number", nhs)
    else:
        assert token is not None
        if not token.startswith("psn:"):
            _fail("--token: a controller token looks like psn:<kid>:<value>", 2)
        tokens = {token}
    records = trail(_audit_store(settings), tokens)
    if as_json:
        for r in records:
            typer.echo(json.dumps(r))
        return
    for line in render(records):
        typer.echo(line)


# -- keys -------------------------------------------------------------------------------------
@keys_app.command("init")
def keys_init() -> None:
    """Create the keyring and, apart from it, the audit signing key (mode 0600) if they do not
    exist. Key material is never printed."""
    from bus.audit.signer import ensure_audit_signer, public_keys_path
    from bus.pseudonymise.keyring import init_keyring

    settings = _settings()
    path = settings.keyring_path
    keyring, created = init_keyring(path)
    state = "created" if created else "already exists"
    typer.echo(f"keyring {state} at {path} (token key {keyring.token.active}, seal key {keyring.seal.active})")
    signer, made = ensure_audit_signer(settings.home)
    typer.echo(f"audit signing key {'created' if made else 'already exists'} ({signer.kid}); "
               f"public keys for auditors: {public_keys_path(settings.home)}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add new active keys; old keys stay so old tokens and seals still resolve."""
    from bus.pseudonymise.keyring import load_keyring, save_keyring

    path = _settings().keyring_path
    rotated = load_keyring(path).rotated()
    save_keyring(rotated, path)
    typer.echo(f"rotated: token key {rotated.token.active}, seal key {rotated.seal.active}")


@app.command()
def synth(
    seed: Annotated[int, typer.Option(help="random seed; same seed and --now, same events")] = 1,
    count: Annotated[int, typer.Option(min=1, max=10_000_000, help="number of events")] = 10,
    event_type: Annotated[str | None, typer.Option("--type", help="only this event type")] = None,
    now: Annotated[str | None, typer.Option(help="anchor time (ISO 8601); default: today 00:00 UTC")] = None,
) -> None:
    """Print realistic, valid, synthetic events (no real people) as JSON lines."""
    from datetime import datetime

    from schemas.registry import EVENT_MODELS
    from schemas.synthetic import Synth, default_anchor

    if event_type is not None and event_type not in EVENT_MODELS:
        _fail(f"--type: unknown event type {event_type} (one of: {', '.join(sorted(EVENT_MODELS))})", 2)
    try:
        anchor = datetime.fromisoformat(now) if now else default_anchor()
    except ValueError:
        _fail("--now: not an ISO 8601 date-time", 2)
    if anchor.tzinfo is None:
        _fail("--now: give a time zone, e.g. 2026-11-25T00:00:00+00:00", 2)
    out = sys.stdout
    for event in Synth(seed=seed, now=anchor).stream(count, event_type):
        out.write(json.dumps(event) + "\n")


# -- schemas ----------------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="output directory")]) -> None:
    """Write one JSON Schema per event type, the envelope, and OPA's input schema."""
    from schemas.export import export_schemas

    written = export_schemas(directory)
    typer.echo(f"wrote {len(written)} schema file(s) to {directory}")


from bus.cli_partners import partners_app  # noqa: E402 - after app, which it extends

app.add_typer(partners_app, name="partners")


def main() -> None:
    from bus import logs
    from bus.security.files import restrict_umask

    # Keys, credentials, audit store, logs and drops under $SGBUS_HOME: 0600 files, 0700 dirs.
    restrict_umask()
    logs.configure(os.environ.get("SGBUS_LOG_LEVEL", "info"))
    try:
        app()
    except SgbusError as exc:
        _err(f"error: {exc}")
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        _err(f"error: {exc}")
        sys.exit(1)
