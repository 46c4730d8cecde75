"""Serving a process's /metrics: on 127.0.0.1, over TLS with client certificates when it has the
material (the local stack issues it), and announced to Prometheus."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.registry import Collector

from bus import logs
from bus.ops import targets
from bus.security.pki import LOCAL_HOSTS, Issued, PartnershipCA, ca_path, client_context
from bus.settings import Settings

#: the certificate every local sgbus process serves /metrics with, and the one Prometheus scrapes with
METRICS_SERVER = "sgbus-metrics"
SCRAPER = "sgbus-scraper"
log = logs.get("sgbus.metrics")


@dataclass(frozen=True)
class MetricsTls:
    cert: Path
    key: Path
    client_ca: Path


def ensure_local_metrics_pki(home: Path) -> tuple[Issued, Issued]:
    """(server, scraper) certificates of the local stack, issued once."""
    ca = PartnershipCA(home).ensure()
    server = ca.issued(METRICS_SERVER) or ca.issue(METRICS_SERVER, server=True, client=False, hosts=LOCAL_HOSTS)
    scraper = ca.issued(SCRAPER) or ca.issue(SCRAPER, server=False, client=True)
    return server, scraper


def metrics_tls(settings: Settings) -> MetricsTls | None:
    """SGBUS_METRICS_TLS_CERT/KEY if set, else the local stack's certificate if it was issued."""
    client_ca = settings.metrics_client_ca or settings.ca_file or ca_path(settings.home)
    if settings.metrics_tls_cert and settings.metrics_tls_key:
        return MetricsTls(settings.metrics_tls_cert, settings.metrics_tls_key, client_ca)
    pki = settings.home / "pki"
    cert, key = pki / f"{METRICS_SERVER}.pem", pki / f"{METRICS_SERVER}.key"
    if cert.is_file() and key.is_file() and client_ca.is_file():
        return MetricsTls(cert, key, client_ca)
    return None


def scraper_context(home: Path) -> ssl.SSLContext:
    """A client context that presents the local scraper certificate (for tests and tools that read
    a process's /metrics directly, as Prometheus does)."""
    _server, scraper = ensure_local_metrics_pki(home)
    ctx = client_context(ca_path(home))
    ctx.load_cert_chain(str(scraper.cert), str(scraper.key))
    return ctx


def serve_metrics(registry: Collector, settings: Settings, job: str, labels: dict[str, str] | None = None,
                  port: int | None = None) -> tuple[Any, str]:
    """Start the /metrics server; returns (server, URL). Only clients with a certificate from the
    partnership CA may read it (Prometheus's scraper), so another user on the host cannot."""
    tls = metrics_tls(settings)
    wanted = settings.metrics_port if port is None else port
    if tls is None:
        log.warning("metrics_served_without_tls", hint="run `sgbus stack up` or set SGBUS_METRICS_TLS_CERT/KEY")
        server, _thread = start_http_server(wanted, addr=settings.metrics_host, registry=registry)
    else:
        server, _thread = start_http_server(
            wanted, addr=settings.metrics_host, registry=registry, certfile=str(tls.cert), keyfile=str(tls.key),
            client_cafile=str(tls.client_ca), client_auth_required=True, tls_min_version=ssl.TLSVersion.TLSv1_2)
    bound = int(server.server_address[1])
    scheme = "https" if tls else "http"
    targets.register(settings.home, job, bound, labels, scheme=scheme)
    return server, f"{scheme}://127.0.0.1:{bound}/metrics"
