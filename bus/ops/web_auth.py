"""Who may use the local Prometheus and Alertmanager: TLS with the partnership CA and one operator
login (bcrypt-hashed in their web config). Without it any local user could silence an alert
before tampering, or read what the bus is doing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from bus.security.credentials import CredentialStore
from bus.security.pki import LOCAL_HOSTS, Issued, PartnershipCA, ca_path, client_context

OPERATOR = "monitoring-operator"


@dataclass(frozen=True)
class MonitoringAccess:
    """An operator's login to Prometheus and Alertmanager, and the CA their certificates chain to."""

    username: str
    password: str = field(repr=False)
    ca_file: Path | None = None

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        return httpx.Client(auth=(self.username, self.password), verify=client_context(self.ca_file),
                            timeout=timeout_s)


def local_access(home: Path) -> MonitoringAccess:
    cred, _ = CredentialStore(home).ensure(OPERATOR)
    return MonitoringAccess(cred.username, cred.password, ca_path(home))


def server_cert(home: Path, name: str) -> Issued:
    ca = PartnershipCA(home).ensure()
    return ca.issued(name) or ca.issue(name, server=True, client=False, hosts=LOCAL_HOSTS)


def web_config(cert: Issued, access: MonitoringAccess) -> dict[str, object]:
    """exporter-toolkit's --web.config.file: HTTPS only, and the operator's bcrypt hash (never the password)."""
    hashed = bcrypt.hashpw(access.password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return {"tls_server_config": {"cert_file": str(cert.cert), "key_file": str(cert.key), "min_version": "TLS12"},
            "basic_auth_users": {access.username: hashed}}


def scrape_auth(access: MonitoringAccess, password_file: Path, ca_file: Path) -> dict[str, object]:
    """How Prometheus itself talks to Prometheus and Alertmanager (self-scrape, alerts)."""
    return {"scheme": "https", "basic_auth": {"username": access.username, "password_file": str(password_file)},
            "tls_config": {"ca_file": str(ca_file)}}
