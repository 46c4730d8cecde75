"""The reference gateway client: what a partner's system does, with its client certificate."""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bus.exceptions import ConfigurationError
from bus.gateway.identity import PartnerCerts
from bus.gateway.models import MAX_BATCH
from bus.security.pki import Issued


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


def tls_context(cert: Issued | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def partner_cert(home: Path, partner_id: str | None, cert_dir: Path | None) -> Issued:
    """A client certificate: from a directory `sgbus partners certs issue --out` wrote, or the
    local stack's own for PARTNER."""
    if cert_dir is not None:
        issued = Issued(cert_dir / "client.key", cert_dir / "client.pem", cert_dir / "ca.pem")
        missing = [p.name for p in (issued.key, issued.cert, issued.ca) if not p.is_file()]
        if missing:
            raise ConfigurationError(f"{cert_dir} lacks {', '.join(missing)} (see `sgbus partners certs issue --out`)")
        return issued
    if partner_id is None:
        raise ConfigurationError("say who you are: --as PARTNER_ID (local certificate) or --cert DIR")
    local = PartnerCerts(home).local(partner_id)
    if local is None:
        raise ConfigurationError(f"no gateway certificate for {partner_id} on this host; run "
                                 f"`sgbus partners certs issue {partner_id}`")
    return local


class GatewayClient:
    def __init__(self, url: str, cert: Issued | None, ca: Path, timeout_s: float = 30.0) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # else one INFO line per request
        self.http = httpx.Client(base_url=url, verify=tls_context(cert, ca), timeout=timeout_s)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _reply(response: httpx.Response) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return Reply(response.status_code, body if isinstance(body, dict) else {"value": body})

    def publish(self, event: dict[str, Any]) -> Reply:
        return self._reply(self.http.post("/v1/events", content=json.dumps(event),
                                          headers={"content-type": "application/json"}))

    def publish_batch(self, events: list[dict[str, Any]]) -> Reply:
        if len(events) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} events per batch")
        return self._reply(self.http.post("/v1/events:batch", json={"events": events}))

    def status(self, event_id: str) -> Reply:
        return self._reply(self.http.get(f"/v1/events/{event_id}/status"))

    def mailbox(self, after: str | None = None, limit: int = 100, wait: int = 0) -> Reply:
        params: dict[str, Any] = {"limit": limit, "wait": wait}
        if after is not None:
            params["after"] = after
        return self._reply(self.http.get("/v1/mailbox", params=params))

    def ack(self, cursor: str) -> Reply:
        return self._reply(self.http.post("/v1/mailbox/ack", json={"cursor": cursor}))
