"""Partner client certificates for the gateway: issued by the partnership CA, registered by
fingerprint, revocable. The register, not the certificate's name, says which partner a
certificate speaks for: a Kafka node's or OPA's certificate from the same CA is no partner."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bus.exceptions import ConfigurationError
from bus.security.files import handover_dir, private_dir, write_private
from bus.security.pki import Issued, PartnershipCA, ca_path


def client_cert_name(partner_id: str) -> str:
    return f"gateway-client.{partner_id}"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class RegisteredCert:
    fingerprint: str
    partner: str
    serial: str
    issued_at: str
    not_after: str
    revoked: bool = False


class PartnerCerts:
    """The register `<home>/pki/partner-certs.json` (public data: fingerprints and partner ids)."""

    def __init__(self, home: Path, path: Path | None = None) -> None:
        self.home = home
        # The gateway may read a copy kept elsewhere (a Kubernetes Secret mounted as a directory);
        # `certs issue|revoke` change the one in the home.
        self.path = path or home / "pki" / "partner-certs.json"
        self._cache: tuple[tuple[int, int, int], dict[str, RegisteredCert]] | None = None

    def all(self) -> list[RegisteredCert]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            raise ConfigurationError(f"the partner certificate register {self.path} is unreadable") from None
        return [RegisteredCert(**c) for c in raw.get("certs", [])]

    def _save(self, certs: list[RegisteredCert]) -> None:
        write_private(self.path, json.dumps({"certs": [c.__dict__ for c in certs]}, indent=2))

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """One change of the register at a time (a concurrent issue must not undo a revocation)."""
        private_dir(self.path.parent)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def partner_for(self, der: bytes) -> str | None:
        """The partner a presented (CA-verified) certificate speaks for, or None."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        version = (st.st_mtime_ns, st.st_ino, st.st_size)  # the register is replaced whole on change
        if self._cache is None or self._cache[0] != version:
            self._cache = (version, {c.fingerprint: c for c in self.all()})
        found = self._cache[1].get(fingerprint(der))
        if found is None or found.revoked or datetime.fromisoformat(found.not_after) <= datetime.now(UTC):
            return None
        return found.partner

    def issue(self, partner_id: str, out: Path | None = None) -> tuple[Issued, RegisteredCert]:
        """A new key and certificate for PARTNER_ID's system. With `out`, the key and chain are
        moved there (the bus host keeps no copy of the private key)."""
        # Handed-over keys are made under a name of their own: the host's own certificate for
        # this partner (if any) is left as it is.
        stem = f"{client_cert_name(partner_id)}.handover-{secrets.token_hex(4)}" if out is not None else None
        issued = PartnershipCA(self.home).issue(client_cert_name(partner_id), server=False, client=True,
                                                file_stem=stem)
        cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
        entry = RegisteredCert(
            fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)), partner=partner_id,
            serial=format(cert.serial_number, "x"), issued_at=datetime.now(UTC).isoformat(timespec="seconds"),
            not_after=cert.not_valid_after_utc.isoformat(timespec="seconds"))
        with self._changing():
            self._save([*self.all(), entry])
        if out is not None:
            handover_dir(out)
            moved = Issued(out / "client.key", out / "client.pem", out / "ca.pem")
            write_private(moved.key, issued.key.read_bytes())
            write_private(moved.cert, issued.cert.read_bytes())
            write_private(moved.ca, ca_path(self.home).read_bytes())  # never through a link left there
            for path in (issued.key, issued.cert, issued.keystore):
                path.unlink()
            issued = moved
        return issued, entry

    def revoke(self, partner_or_fingerprint: str) -> list[RegisteredCert]:
        """Revoke every certificate of a partner, or one by fingerprint; returns those revoked."""
        with self._changing():
            certs, revoked = [], []
            for c in self.all():
                if not c.revoked and partner_or_fingerprint in (c.partner, c.fingerprint):
                    c = RegisteredCert(**{**c.__dict__, "revoked": True})
                    revoked.append(c)
                certs.append(c)
            if revoked:
                self._save(certs)
        return revoked

    def local(self, partner_id: str) -> Issued | None:
        """A certificate kept on this host for PARTNER_ID (the local stack's own clients)."""
        issued = PartnershipCA(self.home).issued(client_cert_name(partner_id))
        if issued is None:
            return None
        cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
        if self.partner_for(cert.public_bytes(serialization.Encoding.DER)) != partner_id:
            return None  # revoked, or issued before the register was reset
        return issued
