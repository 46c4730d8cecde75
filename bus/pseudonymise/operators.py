"""The operators applied to personal data: token, seal/reveal, generalise, drop."""

from __future__ import annotations

import base64
import hmac
import json
import os
from datetime import date
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bus.exceptions import KeyringError
from bus.pseudonymise.keyring import Keyring
from schemas.identifiers import postcode_district


def canonical_identifier(kind: str, value: str) -> bytes:
    """Kind-qualified so an NHS number and a UPN with equal text never share a token."""
    return f"{kind}:{value.strip().upper()}".encode()


def token(keyring: Keyring, domain: str, kind: str, value: str) -> str:
    """`psn:<kid>:<base32 HMAC-SHA256>` under the linkage domain's key: stable, keyed."""
    kid, key = keyring.domain_key(domain)
    mac = hmac.new(key, canonical_identifier(kind, value), sha256).digest()
    return f"psn:{kid}:{base64.b32encode(mac).decode().rstrip('=').lower()}"


def seal(keyring: Keyring, plaintext: dict[str, Any], associated: str) -> dict[str, str]:
    """AES-256-GCM with associated data (event id and field path) binding it to its event."""
    kid = keyring.seal.active
    nonce = os.urandom(12)
    body = json.dumps(plaintext, sort_keys=True, separators=(",", ":")).encode()
    ct = AESGCM(keyring.seal.get(kid)).encrypt(nonce, body, associated.encode())
    return {"kid": kid, "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}


def reveal(keyring: Keyring, sealed: dict[str, str], associated: str) -> dict[str, Any]:
    try:
        key = keyring.seal.get(sealed["kid"])
        body = AESGCM(key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"]), associated.encode()
        )
    except (KeyError, ValueError, InvalidTag):
        raise KeyringError("sealed identity could not be opened") from None
    result: dict[str, Any] = json.loads(body)
    return result


def generalise_dob(value: str, mode: str) -> str | None:
    if mode == "full":
        return value
    if mode == "year_month":
        return date.fromisoformat(value).strftime("%Y-%m")
    return None


def generalise_postcode(value: str, mode: str) -> str | None:
    if mode == "full":
        return value
    if mode == "district":
        return postcode_district(value)
    return None
