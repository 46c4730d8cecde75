"""`sgbus gateway`: run the HTTPS gateway, and the reference clients partners' systems follow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.cli_common import err, fail, kafka_as, load_settings, resolve_endpoints
from bus.settings import Settings

gateway_app = typer.Typer(
    help="The HTTPS gateway: partners publish, collect their mailbox and track their events over mutual TLS. "
         "Without a subcommand, run the server.",
    invoke_without_command=True)

AsPartner = Annotated[str | None, typer.Option("--as", help="partner id: use its certificate kept on this host")]
CertDir = Annotated[Path | None, typer.Option(
    "--cert", help="directory with client.key, client.pem and ca.pem (from `sgbus partners certs issue --out`)")]
Url = Annotated[str | None, typer.Option("--url", help="gateway base URL; default: SGBUS_GATEWAY_URL or the local one")]


@gateway_app.callback()
def gateway_serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="HTTPS port (0 picks a free one)")] = 8443,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port; default SGBUS_METRICS_PORT")
                            ] = None,
) -> None:
    """Run the gateway until SIGTERM/SIGINT (with a subcommand: run that client instead)."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from bus import logs
    from bus.gateway.server import Gateway, serve, server_tls
    from bus.gateway.tracking import AuditReader
    from bus.security.principals import GATEWAY
    from bus.security.resolve import opa_access

    settings = load_settings()
    logs.configure(settings.log_level)
    bootstrap, opa_url = resolve_endpoints(settings)

    decisions = AuditReader(settings)
    gw = Gateway(settings.home, kafka_as(settings, bootstrap, GATEWAY), opa_access(settings, opa_url, "worker"),
                 rate=settings.gateway_rate, burst=settings.gateway_burst, audit_lookup=decisions,
                 partner_certs=settings.gateway_partner_certs, receipts_dir=settings.gateway_receipts_dir)
    if (settings.gateway_tls_cert is None) != (settings.gateway_tls_key is None):
        fail("set both SGBUS_GATEWAY_TLS_CERT and SGBUS_GATEWAY_TLS_KEY, or neither", 2)
    tls = server_tls(settings.home, settings.gateway_tls_cert, settings.gateway_tls_key, settings.ca_file)
    asyncio.run(serve(gw, settings, host, port, settings.metrics_port if metrics_port is None else metrics_port,
                      on_ready=lambda info: err(f"gateway listening on {info['url']} (metrics {info['metrics_url']})"),
                      tls=tls))
    decisions.close()


def _client(settings: Settings, partner: str | None, cert_dir: Path | None, url: str | None):  # type: ignore[no-untyped-def]
    from bus.exceptions import ConfigurationError
    from bus.gateway.client import GatewayClient, partner_cert
    from bus.gateway.state import local_url
    from bus.security.pki import ca_path

    base = url or settings.gateway_url or local_url(settings.home)
    if base is None:
        fail("no gateway URL: pass --url, set SGBUS_GATEWAY_URL, or start `sgbus gateway` on this host", 2)
    try:
        cert = partner_cert(settings.home, partner, cert_dir)
    except ConfigurationError as exc:
        fail(str(exc), 2)
    ca = cert.ca if cert_dir is not None else (settings.ca_file or ca_path(settings.home))
    return GatewayClient(base, cert, ca)


def _events_from(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if str(path) != "-" else sys.stdin.read()
    try:
        data = json.loads(text)
        events = data if isinstance(data, list) else [data]
    except ValueError:
        try:
            events = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            fail("FILE: not JSON, a JSON array, or JSON lines", 2)
    if not events or not all(isinstance(e, dict) for e in events):
        fail("FILE: expected one event (a JSON object), a JSON array of them, or JSON lines", 2)
    return events


@gateway_app.command("send")
def gateway_send(
    file: Annotated[Path, typer.Argument(help="an event, a JSON array of events, or JSON lines ('-' for stdin)")],
    partner: AsPartner = None, cert_dir: CertDir = None, url: Url = None,
    sign: Annotated[bool, typer.Option(help="sign unsigned events with the organisation's key kept on this host")
                    ] = True,
) -> None:
    """Publish events as a partner (batches of up to 500); prints one receipt or problem per event."""
    from bus.exceptions import ConfigurationError
    from bus.gateway.models import MAX_BATCH
    from bus.provenance.registry import LocalSigners

    settings = load_settings()
    events = _events_from(file)
    if sign:
        signers = LocalSigners(settings.home)
        try:
            events = [e if e.get("signature") else signers.sign(e) for e in events]
        except ConfigurationError as exc:
            fail(f"cannot sign: {exc} (or sign the events yourself and pass --no-sign)", 2)
    refused = 0
    with _client(settings, partner, cert_dir, url) as client:
        for start in range(0, len(events), MAX_BATCH):
            chunk = events[start:start + MAX_BATCH]
            if len(events) == 1:
                reply = client.publish(chunk[0])
                results = [{"index": 0, "status": reply.status,
                            **({"receipt": reply.body} if reply.status == 202 else {"problem": reply.body})}]
            else:
                reply = client.publish_batch(chunk)
                if reply.status != 200:
                    fail(f"the gateway refused the batch ({reply.status}): {json.dumps(reply.body)}")
                results = reply.body["results"]
            for result in results:
                result["index"] += start
                refused += result["status"] != 202
                typer.echo(json.dumps(result))
    err(f"{len(events) - refused} of {len(events)} event(s) accepted")
    if refused:
        raise typer.Exit(1)


@gateway_app.command("mailbox")
def gateway_mailbox(
    partner: AsPartner = None, cert_dir: CertDir = None, url: Url = None,
    after: Annotated[str | None, typer.Option(help="cursor to read after; default: after the last acknowledged")
                     ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="deliveries per page")] = 100,
    ack: Annotated[bool, typer.Option(help="acknowledge what was printed (it will not come again)")] = False,
    all_pages: Annotated[bool, typer.Option("--all", help="read page after page until the mailbox is empty")
                         ] = False,
) -> None:
    """Collect a partner's deliveries (one JSON line each on stdout); the cursor goes to stderr."""
    settings = load_settings()
    count = 0
    with _client(settings, partner, cert_dir, url) as client:
        cursor = after
        while True:
            reply = client.mailbox(cursor, limit)
            if reply.status != 200:
                fail(f"the gateway refused ({reply.status}): {json.dumps(reply.body)}")
            for item in reply.body["items"]:
                typer.echo(json.dumps(item))
            count += len(reply.body["items"])
            cursor = reply.body["cursor"]
            if not (all_pages and reply.body["more"]):
                break
        if ack and cursor is not None:
            done = client.ack(cursor)
            if done.status != 200:
                fail(f"acknowledgement refused ({done.status}): {json.dumps(done.body)}")
    err(f"{count} deliver{'y' if count == 1 else 'ies'}{' acknowledged' if ack else ''}; cursor {cursor}")


@gateway_app.command("status")
def gateway_status(
    event_id: Annotated[str, typer.Argument(help="the id of an event you published through the gateway")],
    partner: AsPartner = None, cert_dir: CertDir = None, url: Url = None,
) -> None:
    """What became of an event you published (received, ingested and shared with how many, or dead-lettered)."""
    settings = load_settings()
    with _client(settings, partner, cert_dir, url) as client:
        reply = client.status(event_id)
    typer.echo(json.dumps(reply.body, indent=2))
    if reply.status != 200:
        raise typer.Exit(1)


@gateway_app.command("openapi")
def gateway_openapi(
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout (e.g. schemas/openapi.json)")] = None,
) -> None:
    """The gateway's OpenAPI 3.1 document (committed as schemas/openapi.json)."""
    from bus.gateway.openapi import render

    text = render()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        err(f"wrote {out}")
