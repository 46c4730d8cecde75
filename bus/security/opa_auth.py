"""Reaching OPA: over TLS with the partnership CA, with a bearer token per role (`admin` writes
policies and data, `worker` only asks for decisions); OPA holds only the tokens' SHA-256
(policies/system/authz.rego)."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from bus.exceptions import ConfigurationError
from bus.security.credentials import CredentialStore
from bus.security.pki import client_context

OpaRole = Literal["admin", "worker", "metrics"]
# `metrics`: Prometheus's token, good for GET /metrics and nothing else.
ROLES: tuple[OpaRole, ...] = ("admin", "worker", "metrics")


def _name(role: OpaRole) -> str:
    return f"opa-{role}"


def local_token(home: Path, role: OpaRole) -> str:
    """The role's token from the local stack's credential store (created on first use)."""
    cred, _ = CredentialStore(home).ensure(_name(role))
    return cred.password


def token_hashes(home: Path) -> dict[str, str]:
    """role -> SHA-256 of its token: what OPA gets (as data.system.sgbus_tokens, inside the
    signed bundle), never the tokens themselves."""
    return {role: hashlib.sha256(local_token(home, role).encode()).hexdigest() for role in ROLES}


@dataclass(frozen=True)
class OpaAccess:
    """How a client reaches OPA: its URL, the bearer token of its role and, for https, the CA
    its certificate is checked against. The token never appears in repr."""

    url: str
    token: str = field(repr=False)
    ca_file: Path | None = None

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlparse(self.url).port or 8181

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "https"

    def ssl_context(self) -> ssl.SSLContext | None:
        return client_context(self.ca_file) if self.tls else None

    def sync_client(self, timeout: float = 5.0) -> Any:
        from opa_client.opa import OpaClient

        # The synchronous client hands `ssl` to requests as `verify`: a CA file path checks
        # OPA's certificate against the partnership CA only.
        verify: str | bool = str(self.ca_file) if self.tls and self.ca_file else self.tls
        client = OpaClient(host=self.host, port=self.port, timeout=timeout, retries=0, token=self.token,
                           ssl=verify)
        # requests lets REQUESTS_CA_BUNDLE (and proxy variables) override the session's CA: OPA
        # is checked against the partnership CA only, and reached directly.
        client._session.trust_env = False
        return client


def check_url(url: str) -> None:
    """Bearer tokens go over TLS, or in clear only on loopback (a developer's own OPA)."""
    parsed = urlparse(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and parsed.hostname in {"127.0.0.1", "localhost", "::1"}:
        return
    raise ConfigurationError(f"OPA URL must be https:// (plain http only on loopback): {parsed.scheme}://"
                             f"{parsed.hostname}")
