"""`sgbus connector`: take a partner's files in the format its systems already produce."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.cli_common import err, fail, kafka_as, load_settings, resolve_endpoints

connector_app = typer.Typer(help="Inbound connectors: convert partners' own files (FHIR, DfE returns, "
                                 "CTF, attendance, police notifications) into events and publish them.",
                            no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="connector name (see `sgbus connector list`)")]
OrgOpt = Annotated[str, typer.Option("--org", help="the publishing organisation's org_id in partners.yaml")]


def _connector_and_context(name: str, org: str, now: str | None):  # type: ignore[no-untyped-def]
    from bus.policy.data import load_partnership
    from connectors.base import Context
    from connectors.inbound import CONNECTORS, connector_settings

    if name not in CONNECTORS:
        fail(f"connector: unknown connector {name} (one of: {', '.join(sorted(CONNECTORS))})", 2)
    connector = CONNECTORS[name]()
    settings = load_settings()
    partnership = load_partnership(settings.policies_dir / "data")
    partner = next((p for p in partnership.partners if p.org_id == org), None)
    if partner is None:
        fail(f"--org: no partner in partners.yaml has org_id {org}", 2)
    if partner.agency not in {a.value for a in connector.publishers()}:
        fail(f"--org: {org} is a {partner.agency} partner; the {name} connector publishes for "
             f"{' or '.join(a.value for a in connector.publishers())} organisations", 2)
    try:
        anchor = datetime.fromisoformat(now) if now else None
    except ValueError:
        fail("--now: not an ISO 8601 date-time", 2)
    if anchor is not None and anchor.tzinfo is None:
        fail("--now: give a time zone, e.g. 2026-11-25T09:00:00+00:00", 2)
    extra: dict[str, Any] = {**connector_settings(name, settings.policies_dir / "data"), "agency": partner.agency}
    ctx = Context(org_id=org, settings=extra) if anchor is None else Context(org_id=org, now=anchor, settings=extra)
    return connector, ctx, settings, partnership


@connector_app.command("list")
def connector_list() -> None:
    """The connectors, the agency each publishes for, and what each reads."""
    from connectors.inbound import CONNECTORS

    for name, cls in sorted(CONNECTORS.items()):
        typer.echo(f"{name:<16} {'/'.join(a.value for a in cls.publishers()):<18} {cls.summary}")


@connector_app.command("convert")
def connector_convert(
    name: NameArg,
    path: Annotated[Path, typer.Argument(help="the source file (a directory for a multi-table return)")],
    org: OrgOpt,
    now: Annotated[str | None, typer.Option(help="recorded_at of the events (ISO 8601); default now")] = None,
) -> None:
    """Print the canonical events a file becomes, as JSON lines; publish nothing. Each bad
    record is reported (PATH: record N: field: message [code], never the value); exit 2 if any."""
    from connectors.base import FileRejected, Rejection

    connector, ctx, _, _ = _connector_and_context(name, org, now)
    if not path.exists():
        fail(f"no such file or directory: {path}", 2)
    converted = rejected = 0
    try:
        for result in connector.convert(path, ctx):
            if isinstance(result, Rejection):
                rejected += 1
                err(str(result))
            else:
                converted += 1
                typer.echo(json.dumps(result.event))
    except FileRejected as exc:
        fail(f"{path}: {exc}", 2)
    err(f"{converted} event(s); {rejected} record(s) rejected")
    if rejected:
        raise typer.Exit(2)


@connector_app.command("run")
def connector_run(
    name: NameArg,
    watch_dir: Annotated[Path, typer.Option("--watch", help="directory the partner's system drops files into")],
    org: OrgOpt,
    once: Annotated[bool, typer.Option("--once", help="publish the files there now, then stop")] = False,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", help="the organisation's private key file; default: the local stack's key")] = None,
    poll: Annotated[float, typer.Option(min=0.1, help="seconds between looks at the directory")] = 1.0,
    name_files: Annotated[bool, typer.Option(
        "--name-files", help="name files by their path in reports; default: by their SHA-256 digest, as the "
                             "partner's system may name a file after a child")] = False,
) -> None:
    """Publish each file dropped in the directory (oldest first; files still being written, or
    named *.tmp/*.part, wait), signed as the organisation. What was sent is remembered, so a
    restart or a re-delivered file sends nothing twice. Runs until stopped (or --once);
    exit 2 if any record was rejected. A bad file or record is reported as `file sha256:DIGEST:
    ...` (find it with `sha256sum DIR/* | grep ^DIGEST`) unless --name-files."""
    from bus.exceptions import ConfigurationError
    from bus.kafka_io import idempotent_producer, produce_all
    from bus.ops import targets
    from bus.provenance.registry import LocalSigners, load_private_key
    from bus.security.principals import publisher_for_org
    from connectors.ledger import Ledger
    from connectors.metrics import serve_connector_metrics
    from connectors.run import RunStats, watch

    connector, ctx, settings, partnership = _connector_and_context(name, org, None)
    if not watch_dir.is_dir():
        fail(f"--watch: no such directory: {watch_dir}", 2)
    sign: Any = LocalSigners(settings.home).sign
    if signing_key is not None:
        try:
            sign = load_private_key(signing_key)
        except ConfigurationError as exc:
            fail(str(exc), 2)
    principal = publisher_for_org(partnership, org)
    bootstrap, _ = resolve_endpoints(settings)
    producer = idempotent_producer(kafka_as(settings, bootstrap, principal or ""))
    ledger = Ledger(settings.home / "connectors" / f"{name}.{org}.sqlite")
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    stats = RunStats()
    if not once:  # a long-running connector is scraped like every other sgbus process
        serve_connector_metrics(settings, name, org, stats)
    try:
        stats = watch(watch_dir, connector, ctx, ledger, sign, lambda records: produce_all(producer, records),
                      once=once, poll_s=poll, should_stop=lambda: stopping["now"], report=err, stats=stats,
                      name_files=name_files)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        ledger.close()
        targets.stopping()  # stopped as asked (SIGTERM, Ctrl-C, --once): leave Prometheus's targets
    err(f"{stats.files} file(s): published {stats.published} event(s), {stats.already_sent} already sent, "
        f"{stats.rejected} record(s) rejected, {stats.bad_files} unreadable file(s)")
    if stats.rejected or stats.bad_files:
        raise typer.Exit(2)
