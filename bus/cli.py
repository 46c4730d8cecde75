"""The `sgbus` command line. Exit codes: 0 ok, 1 failure, 2 bad input. Each command group lives
beside its domain (bus/policy/cli.py, bus/audit/cli.py, connectors/cli.py, ...); this module
holds the root, the stack and the pipeline's own commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.audit.cli import CASE_REF_HELP, REASON_HELP, audit_app
from bus.cli_common import err, fail, kafka_as, load_settings, local_stack, open_audit, resolve_endpoints
from bus.deploy.cli import deploy_app
from bus.exceptions import SgbusError
from bus.gateway.cli import gateway_app
from bus.policy.cli import policy_app
from bus.pseudonymise.cli import keys_app
from bus.security.cli import partners_app
from connectors.cli import connector_app
from connectors.delivery.cli import deliver_app

app = typer.Typer(help="sgbus: the secure multi-agency safeguarding event bus.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
stack_app = typer.Typer(help="Start, stop and inspect the local Kafka + OPA stack.", no_args_is_help=True)
schemas_app = typer.Typer(help="Export the event contracts.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(policy_app, name="policy")
app.add_typer(keys_app, name="keys")
app.add_typer(schemas_app, name="schemas")
app.add_typer(audit_app, name="audit")
app.add_typer(deliver_app, name="deliver")
app.add_typer(partners_app, name="partners")
app.add_typer(connector_app, name="connector")
app.add_typer(gateway_app, name="gateway")
app.add_typer(deploy_app, name="deploy")


# -- stack ----------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(
    as_json: Annotated[bool, typer.Option("--json", help="print status as JSON")] = False,
    brokers: Annotated[int, typer.Option(
        min=1, max=3, help="Kafka nodes for a new stack: 1, or 3 (each controller and broker; topics replicated "
                           "3 times, min.insync.replicas 2)")] = 1,
) -> None:
    """Start Kafka (KRaft), OPA, Prometheus and Alertmanager on free loopback ports, load
    policies, create topics."""
    settings = load_settings()
    stack = local_stack(settings)
    stack.brokers = brokers
    try:
        status, started = stack.up()
    except SgbusError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(status))
    elif started:
        typer.echo(f"started {', '.join(started)}: kafka {status['kafka_bootstrap']}, opa {status['opa_url']}")
        typer.echo(f"prometheus {status['prometheus_url']}, alertmanager {status['alertmanager_url']}")
        typer.echo(f"state and logs in {status['home']}; stop with `sgbus stack down`")
    else:
        typer.echo(f"already running: kafka {status['kafka_bootstrap']}, opa {status['opa_url']} (nothing to do)")


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly the processes `sgbus stack up` started (by recorded pid)."""
    stopped = local_stack(load_settings()).down()
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json", help="print status as JSON")] = False) -> None:
    """Show whether Kafka, OPA, Prometheus and Alertmanager are running, their endpoints, pids and logs."""
    status = local_stack(load_settings(), quiet=True).status()
    if as_json:
        typer.echo(json.dumps(status))
        return
    for name in ("kafka", "opa", "prometheus", "alertmanager"):
        info = status[name]
        if info["alive"]:
            typer.echo(f"{name}: running (pid {info['pid']}, port {info['port']}, log {info['log']})")
        else:
            typer.echo(f"{name}: stopped")
    if not status["running"]:
        raise typer.Exit(1)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch, verify and cache the pinned Kafka jars, OPA binary, Prometheus, Alertmanager and
    JMX exporter (done by `up` too)."""
    from bus import toolchain
    from bus.toolchain import monitoring

    libs, opa = toolchain.ensure_all(err)
    typer.echo(f"kafka {toolchain.KAFKA_VERSION}: {libs}")
    typer.echo(f"opa {opa.version}: {opa.path}")
    binaries = monitoring.ensure_prometheus(err)
    typer.echo(f"prometheus {monitoring.PROMETHEUS_VERSION}: {binaries.prometheus}")
    typer.echo(f"alertmanager: {binaries.alertmanager}")
    typer.echo(f"jmx exporter {monitoring.JMX_EXPORTER_VERSION}: {monitoring.ensure_jmx_exporter(err)}")


# -- worker, publish, tail, demo -------------------------------------------------------------
@app.command()
def worker(
    stage: Annotated[str, typer.Option(
        help="all: every agent in this process (at-least-once); ingest, route or audit: that stage "
             "only, with Kafka transactions (exactly-once); concern: the multi-agency concern table "
             "(at-least-once, its raises are idempotent); run one process per stage")] = "all",
) -> None:
    """Run the Faust agents (ingest -> route -> deliver + audit, and concern) until stopped."""
    from bus.malloc_tuning import fix_mmap_threshold

    fix_mmap_threshold()  # before the worker's imports, buffers and helper processes
    from bus.audit.chain import AuditStoreError
    from bus.worker import run_worker

    if stage not in ("all", "ingest", "route", "audit", "concern"):
        fail(f"--stage: one of all, ingest, route, audit, concern (not {stage})", 2)
    settings = load_settings()
    bootstrap, opa_url = resolve_endpoints(settings)
    try:
        run_worker(settings, bootstrap, opa_url, stage)
    except AuditStoreError as exc:
        fail(str(exc))


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

    settings = load_settings()
    stream = sys.stdin if file == "-" else None
    if stream is None:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}", 2)
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
            fail(str(exc), 2)
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
            err(f"line {number}: {first.field}: {first.message} [{first.code}]")
            continue
        except ConfigurationError as exc:
            bad += 1
            err(f"line {number}: signature: {exc} [no_signing_key]")
            continue
        principal = publisher_for_org(partnership, event.source.org_id)
        if principal is None and not settings.kafka_username:
            bad += 1
            err(f"line {number}: source.org_id: no partner in the partnership data has this org_id, "
                "so no publisher may send it [unknown_publisher]")
            continue
        records.setdefault(principal or "", []).append(
            (ingress_topic(event.source.agency), event.partition_key(), line.encode()))
    if bad and not skip_invalid:
        err(f"{bad} invalid line(s); nothing published")
        raise typer.Exit(2)
    bootstrap, _ = resolve_endpoints(settings)
    count = 0
    for principal, batch in records.items():
        count += produce_all(idempotent_producer(kafka_as(settings, bootstrap, principal)), batch)
    typer.echo(f"published {count} event(s)" + (f"; skipped {bad} invalid" if bad else ""), err=True)
    if bad:
        raise typer.Exit(2)


@app.command()
def replay(
    failed: Annotated[bool, typer.Option("--failed", help="shares allowed but not delivered (view_failed)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be replayed; send nothing")] = False,
) -> None:
    """Route again what the bus kept for replay. `--failed`: every allowed share whose view
    could not be built (e.g. a key the worker lacked), unless delivered since; a request naming
    each event on sg.events goes on sg.replay, which every route agent reads, for its missed
    recipients only, and the event is decided and audited again."""
    from bus.exceptions import StackError
    from bus.replay import replay_failed
    from bus.security.principals import REPLAYER

    if not failed:
        fail("say what to replay: --failed", 2)
    settings = load_settings()
    bootstrap, _ = resolve_endpoints(settings)
    try:
        report = replay_failed(kafka_as(settings, bootstrap, REPLAYER), open_audit(settings), dry_run=dry_run)
    except StackError as exc:
        fail(f"nothing replayed: {exc}")
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{report.failed} failed view(s) in sg.dlq; {report.already_delivered} delivered since; "
               f"{report.already_replayed} on sg.replay, not routed yet; "
               f"{verb} {report.replayed_shares} share(s) of {report.replayed_events} event(s)")
    if report.unproven:
        err(f"{report.unproven} share(s) dead-lettered by an earlier release carry no replay proof and cannot be "
            "replayed with this one (README, \"Upgrading a running bus\")")
    if report.missing:
        err(f"{len(report.missing)} event(s) no longer on sg.events (retention): ingest ids "
             + ", ".join(report.missing[:5]))
        raise typer.Exit(1)
    if report.unproven:
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

    settings = load_settings()
    if load_partnership(settings.policies_dir / "data").partner(partner) is None:
        fail(f"partner: unknown partner {partner} (not in {settings.policies_dir / 'data' / 'partners.yaml'})", 2)
    bootstrap, _ = resolve_endpoints(settings)
    try:
        access = kafka_as(settings, bootstrap, partner_name(partner))
        values = read_topic(access, deliver_topic(partner), max_messages=max_, timeout_s=timeout,
                            group=partner_group_prefix(partner) + "tail")
    except SgbusError:
        fail(f"partner: unknown partner {partner} (no credentials or no topic {deliver_topic(partner)})", 2)
    for value in values:
        typer.echo(value.decode())
    err(f"{len(values)} event(s) delivered to {partner}")


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """An operator's summary without a browser: processes up, lag, rates, dead letters and
    rejections by reason, alerts firing (from Prometheus and Alertmanager). Exit 1 unless
    healthy: a process down, no worker, a critical alert firing, no alert rules loaded, or
    alerts that could not be checked."""
    from bus.ops.status import StatusUnavailable, collect, render
    from bus.ops.web_auth import OPERATOR, MonitoringAccess, local_access
    from bus.security.credentials import CredentialStore

    settings = load_settings()
    prometheus, alertmanager = settings.prometheus_url, settings.alertmanager_url
    access = None
    if prometheus is None:
        stack = local_stack(settings, quiet=True).status()
        prometheus, alertmanager = stack["prometheus_url"], alertmanager or stack["alertmanager_url"]
        if prometheus is not None and CredentialStore(settings.home).get(OPERATOR) is not None:
            access = local_access(settings.home)
    elif settings.monitoring_username and settings.monitoring_password:
        access = MonitoringAccess(settings.monitoring_username, settings.monitoring_password.get_secret_value(),
                                  settings.ca_file)
    if prometheus is None:
        fail("no Prometheus: set SGBUS_PROMETHEUS_URL or start the local stack (`sgbus stack up`)")
    for name, url in (("SGBUS_PROMETHEUS_URL", prometheus), ("SGBUS_ALERTMANAGER_URL", alertmanager)):
        if url and access and not url.startswith("https://"):
            fail(f"{name}: use https:// (the operator's password is sent with each request)", 2)
    try:
        status = collect(prometheus, alertmanager, access)
    except StatusUnavailable as exc:
        fail(str(exc))
    typer.echo(json.dumps(status.as_json(), indent=2) if as_json else render(status))
    if not status.healthy:
        raise typer.Exit(1)


@app.command()
def chronology(
    token: Annotated[str, typer.Option(help="the child's token as the MASH holds it (psn:...)")],
    partner: Annotated[str | None, typer.Option(
        "--as", help="the MASH partner asking (default: children's social care in the concern's linkage domain)")]
    = None,
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP, show_default=False)] = None,
    case_ref: Annotated[str | None, typer.Option("--case-ref", help=CASE_REF_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the entries as JSON")] = False,
) -> None:
    """One child's cross-agency timeline for the MASH: every event it was sent about the child
    (concerns included), oldest first, read with its own Kafka principal. The look-up itself is
    recorded first in the audit store (`sgbus audit lookups`)."""
    from bus.audit.cli import reason_option, record_or_fail
    from bus.audit.lookups import LookupRefused, check_token
    from bus.concern.chronology import as_json as entries_json
    from bus.concern.chronology import mash_partner, render, timeline
    from bus.exceptions import ConfigurationError
    from bus.policy.data import load_partnership
    from bus.security.principals import partner_name

    try:
        check_token("--token", token)
    except LookupRefused as exc:
        fail(f"{exc}: the child's token as the MASH receives it", 2)
    why = reason_option(reason)
    settings = load_settings()
    try:
        who = mash_partner(load_partnership(settings.policies_dir / "data"), partner)
    except ConfigurationError as exc:
        fail(f"--as: {exc}" if partner else str(exc), 2)
    record_or_fail(settings, None, command="chronology", reason=why, case_ref=case_ref, tokens={token},
                   asked_as=who.id)
    bootstrap, _ = resolve_endpoints(settings)
    entries = timeline(kafka_as(settings, bootstrap, partner_name(who.id)), who, token)
    if as_json:
        typer.echo(entries_json(entries))
    else:
        for line in render(entries, who):
            typer.echo(line)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="seed of the synthetic events")] = 1,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every decision")] = 180.0,
) -> None:
    """Stack + worker + synthetic Operation Encompass and CP-IS events; prints who got what."""
    from bus.demo import run_demo

    settings = load_settings()
    # Synthetic children belong on the demo's own local stack, never in a deployment's topics
    # or its legal audit chain.
    real = [name for name, value in (("SGBUS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                                     ("SGBUS_OPA_URL", settings.opa_url), ("SGBUS_AUDIT_DSN", settings.audit_dsn))
            if value is not None]
    if real:
        fail(f"the demo runs on a local stack of its own; unset {', '.join(real)} (they point at a deployment)", 2)
    raise typer.Exit(run_demo(settings, seed=seed, timeout_s=timeout, echo=typer.echo, err=err))


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
        fail(f"--type: unknown event type {event_type} (one of: {', '.join(sorted(EVENT_MODELS))})", 2)
    try:
        anchor = datetime.fromisoformat(now) if now else default_anchor()
    except ValueError:
        fail("--now: not an ISO 8601 date-time", 2)
    if anchor.tzinfo is None:
        fail("--now: give a time zone, e.g. 2026-11-25T00:00:00+00:00", 2)
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




def main() -> None:
    from bus import logs
    from bus.security.files import restrict_umask

    # Keys, credentials, audit store, logs and drops under $SGBUS_HOME: 0600 files, 0700 dirs.
    restrict_umask()
    logs.configure(os.environ.get("SGBUS_LOG_LEVEL", "info"))
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A setting from the environment: name the variable, never echo its value (a DSN, a key).
        for problem in exc.errors(include_url=False, include_input=False):
            name = "SGBUS_" + "_".join(str(p) for p in problem["loc"][:1]).upper()
            err(f"error: {name}: {problem['msg']}")
        sys.exit(2)
    except SgbusError as exc:
        err(f"error: {exc}")
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        err(f"error: {exc}")
        sys.exit(1)
