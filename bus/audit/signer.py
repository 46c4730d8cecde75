"""The audit checkpoint signing key, kept apart from the pseudonymisation keyring, and the
public keys an outside auditor verifies with.

- private: `$SGBUS_HOME/audit-signing/signing-key.json` (0600), or SGBUS_AUDIT_SIGNING_KEY_JSON
  from a secret store; only the audit stage needs it. Behind `AuditSigner.sign` it could live in
  an HSM or a cloud KMS (Ed25519 sign is the only operation used).
- public: `$SGBUS_HOME/audit-signing/public-keys.json` ({"keys": {kid: base64url raw key},
  "retired": {kid: last seq}}), every key ever used, so old checkpoints still verify; give it to
  auditors and partners. A retired key (`sgbus keys retire-audit`) vouches only for checkpoints up
  to the last record it signed: whoever later gets hold of it cannot sign a newer head.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bus.exceptions import KeyringError
from bus.provenance.signing import b64url, b64url_decode, ed25519_verifies, usable_public_key
from bus.security.files import write_private


@dataclass(frozen=True)
class AuditSigner:
    kid: str
    key: Ed25519PrivateKey = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def public_raw(self) -> str:
        return b64url(self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw))

    def to_json(self) -> str:
        raw = self.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        return json.dumps({"kid": self.kid, "private_key": b64url(raw)})

    @classmethod
    def from_json(cls, text: str) -> AuditSigner:
        try:
            data = json.loads(text)
            return cls(str(data["kid"]), Ed25519PrivateKey.from_private_bytes(b64url_decode(data["private_key"])))
        except (ValueError, KeyError, TypeError):
            raise KeyringError("the audit signing key is malformed") from None


@dataclass(frozen=True)
class AuditVerifier:
    keys: dict[str, Ed25519PublicKey]
    #: kid -> the last record a retired key signed a checkpoint at
    retired: dict[str, int] = field(default_factory=dict)

    def verify(self, kid: str, signature: bytes, message: bytes, *, seq: int | None = None) -> bool:
        """`seq`: the record a checkpoint is at; a retired key vouches for none past its last."""
        key = self.keys.get(kid)
        if key is None:
            return False
        if kid in self.retired and (seq is None or seq > self.retired[kid]):
            return False
        return ed25519_verifies(key, signature, message)  # libsodium, as publishers' signatures


def signing_key_path(home: Path) -> Path:
    return home / "audit-signing" / "signing-key.json"


def public_keys_path(home: Path) -> Path:
    return home / "audit-signing" / "public-keys.json"


def load_verifier(path: Path) -> AuditVerifier:
    try:
        data = json.loads(path.read_text())
        raw_keys = {kid: b64url_decode(raw) for kid, raw in data["keys"].items()}
        keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in raw_keys.items()}
        retired = {str(kid): _seq(last) for kid, last in dict(data.get("retired") or {}).items()}
    except FileNotFoundError:
        raise KeyringError(f"no audit public keys at {path}; run `sgbus keys init`") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyringError(f"audit public keys at {path} are malformed") from None
    unusable = sorted(kid for kid, raw in raw_keys.items() if not usable_public_key(raw))
    if unusable:  # a small-order key would vouch for forged checkpoints
        raise KeyringError(f"audit public keys at {path}: {', '.join(unusable)} of small order or encoded "
                           "non-canonically; refused")
    return AuditVerifier(keys, retired)


def _seq(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a retired key's last record is a whole number")
    return value


def _read_public(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"keys": {}}
    data = json.loads(path.read_text())
    return {"keys": dict(data["keys"]), **({"retired": dict(data["retired"])} if data.get("retired") else {})}


def _write_public(path: Path, data: dict[str, Any]) -> None:
    # Public, but under $SGBUS_HOME everything is 0600; copy it out for auditors.
    write_private(path, json.dumps(data, indent=2))


def _add_public(path: Path, signer: AuditSigner) -> None:
    data = _read_public(path)
    data["keys"][signer.kid] = signer.public_raw()
    _write_public(path, data)


def retire_public(path: Path, kid: str, last_seq: int) -> None:
    """Mark `kid` retired after record `last_seq` in the public key file."""
    data = _read_public(path)
    if kid not in data["keys"]:
        raise KeyringError(f"no audit public key {kid} in {path}")
    data.setdefault("retired", {})[kid] = last_seq
    _write_public(path, data)


def new_audit_signer(home: Path) -> AuditSigner:
    """A new signing key (replacing the active one); its public key joins the public set."""
    taken = set(_read_public(public_keys_path(home))["keys"])
    kid = "a" + secrets.token_hex(4)
    while kid in taken:  # a repeat would replace a public key old checkpoints verify with
        kid = "a" + secrets.token_hex(4)
    signer = AuditSigner(kid, Ed25519PrivateKey.generate())
    write_private(signing_key_path(home), signer.to_json())
    _add_public(public_keys_path(home), signer)
    return signer


def ensure_audit_signer(home: Path) -> tuple[AuditSigner, bool]:
    path = signing_key_path(home)
    if path.is_file():
        return AuditSigner.from_json(path.read_text()), False
    return new_audit_signer(home), True


def load_signer(home: Path, secret_json: str | None = None) -> AuditSigner:
    if secret_json:
        return AuditSigner.from_json(secret_json)
    path = signing_key_path(home)
    if not path.is_file():
        raise KeyringError(f"no audit signing key at {path}; run `sgbus keys init`")
    return AuditSigner.from_json(path.read_text())
