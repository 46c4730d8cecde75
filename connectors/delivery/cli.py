"""`sgbus deliver`: a partner's events to its systems (webhook, file drop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bus.cli_common import err, fail, kafka_as, load_settings, resolve_endpoints

deliver_app = typer.Typer(help="Deliver a partner's events to its systems (webhook, file drop).",
                          no_args_is_help=True)


FormatOpt = Annotated[str, typer.Option(
    "--format", help="json: the view as the bus delivers it; fhir: FHIR R4 (CP-IS CareTeam, attendance "
                     "Encounter) for NHS systems; event types with no FHIR form go to sg.dlq")]


def _run_delivery(partner: str, sink, max_events: int | None, idle_timeout: float | None,  # type: ignore[no-untyped-def]
                  fmt: str = "json") -> None:
    if fmt not in ("json", "fhir"):
        fail(f"--format: json or fhir (not {fmt})", 2)
    from connectors.delivery.metrics import DeliveryMetrics

    channel = sink.name
    metrics = DeliveryMetrics(partner, channel)
    if hasattr(sink, "on_retry"):
        sink.on_retry = metrics.failure
    if fmt == "fhir":
        from connectors.delivery.fhir import FhirSink

        sink = FhirSink(sink)
    import signal

    from bus.ops import targets
    from bus.ops.lag import Group, LagCollector
    from bus.ops.serve import serve_metrics
    from bus.security.principals import delivery_group, delivery_name
    from bus.topics import DELIVER_PREFIX
    from connectors.delivery.base import run_delivery

    settings = load_settings()
    bootstrap, _ = resolve_endpoints(settings)
    access = kafka_as(settings, bootstrap, delivery_name(partner))
    metrics.registry.register(LagCollector(access, [
        Group(f"delivery:{channel}", delivery_group(partner, sink.name), DELIVER_PREFIX + partner)]))
    serve_metrics(metrics.registry, settings, "sgbus-delivery", {"partner": partner, "channel": channel})
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    try:
        stats = run_delivery(access=access, partner=partner, sink=sink, state_dir=settings.home / "delivery",
                             max_events=max_events, idle_timeout_s=idle_timeout,
                             should_stop=lambda: stopping["now"], metrics=metrics)
    except KeyboardInterrupt:
        targets.stopping()
        raise typer.Exit(130) from None
    targets.stopping()  # stopped as asked, or its --max / --idle-timeout reached: not a crash
    err(f"delivered {stats.delivered}, dead-lettered {stats.dead_lettered}, "
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
    fmt: FormatOpt = "json",
) -> None:
    """POST each event (HMAC-SHA256 signed, timestamped); retry 5xx/timeouts with backoff and
    jitter; 4xx goes to sg.dlq. Runs until stopped."""
    from connectors.delivery.webhook import WebhookSink

    secret = os.environ.get(secret_env)
    if not secret:
        fail(f"--secret-env: set {secret_env} to the secret shared with the partner", 2)
    if not plain_http_allowed(url):
        fail("--url: use https:// (plain http only for a local test endpoint)", 2)
    _run_delivery(partner, WebhookSink(url, secret.encode()), max_events, idle_timeout, fmt)


def plain_http_allowed(url: str) -> bool:
    """https://, or http:// to this host only: the host parsed, not the text's start
    (`http://localhost.example.org/` and `http://localhost@example.org/` are other hosts)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost", "::1"} and "@" not in parts.netloc


@deliver_app.command("file")
def deliver_file(
    partner: Annotated[str, typer.Argument(help="partner id")],
    directory: Annotated[Path, typer.Option("--dir", help="drop directory")],
    max_events: Annotated[int | None, typer.Option("--max", help="stop after N events")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="stop after S seconds with nothing new")] = None,
    fmt: FormatOpt = "json",
) -> None:
    """Write events as JSON-lines files, each written whole and renamed into DIR."""
    from connectors.delivery.filedrop import FileDropSink

    _run_delivery(partner, FileDropSink(directory, partner), max_events, idle_timeout, fmt)
