"""The partnership CA and the certificates it issues (Kafka nodes, OPA, later partner systems).

Keys are ECDSA P-256 (fast TLS handshakes, accepted by Java, OpenSSL and Python alike), written
unencrypted but 0600 under $SGBUS_HOME/pki (0700); protecting that directory, or moving the CA
key into an HSM, is the deployer's job (README "Security model")."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bus.security.files import private_dir, write_private

CA_DAYS = 3650
LEAF_DAYS = 825
ORG = "sgbus partnership"


@dataclass(frozen=True)
class Issued:
    """A private key and its certificate chain (leaf first, then the CA), as PEM files."""

    key: Path
    cert: Path
    ca: Path

    @property
    def keystore(self) -> Path:
        """Key and chain in one PEM file, as Kafka's PEM keystore wants it."""
        return self.key.with_suffix(".keystore.pem")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class PartnershipCA:
    """A CA under `<home>/pki`, created on first use and reused after."""

    def __init__(self, home: Path) -> None:
        self.dir = private_dir(home / "pki")
        self.key_path = self.dir / "ca.key"
        self.cert_path = ca_path(home)

    def ensure(self) -> PartnershipCA:
        if self.key_path.is_file() and self.cert_path.is_file():
            return self
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("sgbus partnership CA")
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _key_pem(key))
        write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return self

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the partnership CA key is not an EC key")
        return key, x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def issue(self, name: str, *, server: bool, client: bool, hosts: tuple[str, ...] = (),
              file_stem: str | None = None) -> Issued:
        """Issue (or reissue) `<pki>/<name>.key` + `<name>.pem` with CN=`name` (files named
        `file_stem` instead, when given)."""
        self.ensure()
        ca_key, ca_cert = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
        stem = file_stem or name
        issued = Issued(self.dir / f"{stem}.key", self.dir / f"{stem}.pem", self.cert_path)
        write_private(issued.key, _key_pem(key))
        write_private(issued.cert, chain)
        write_private(issued.keystore, _key_pem(key) + chain)
        return issued

    def issued(self, name: str) -> Issued | None:
        """A certificate issued earlier, if its files are all there."""
        found = Issued(self.dir / f"{name}.key", self.dir / f"{name}.pem", self.cert_path)
        return found if all(p.is_file() for p in (found.key, found.cert, found.keystore)) else None


LOCAL_HOSTS = ("127.0.0.1", "localhost")


def ca_path(home: Path) -> Path:
    """Where the local stack keeps the partnership CA certificate (public)."""
    return home / "pki" / "ca.pem"


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS 1.2+ client context that trusts the partnership CA only (or the system's, given none)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
