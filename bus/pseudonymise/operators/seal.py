"""`seal` and `reveal`: AES-256-GCM bound to its event and field path by associated data."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bus.exceptions import KeyringError
from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.base import Operator, OperatorContext


@lru_cache(maxsize=16)
def _aead(key: bytes) -> AESGCM:
    # Building the cipher (key schedule) cost more than sealing one small identity.
    return AESGCM(key)


def seal(keyring: Keyring, plaintext: Any, associated: str) -> dict[str, str]:
    kid = keyring.seal.active
    nonce = os.urandom(12)
    body = json.dumps(plaintext, sort_keys=True, separators=(",", ":")).encode()
    ct = _aead(keyring.seal.get(kid)).encrypt(nonce, body, associated.encode())
    return {"kid": kid, "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}


def reveal(keyring: Keyring, sealed: Mapping[str, str], associated: str) -> Any:
    try:
        key = keyring.seal.get(sealed["kid"])
        body = _aead(key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"]), associated.encode()
        )
    except (KeyError, ValueError, InvalidTag):
        raise KeyringError("sealed value could not be opened") from None
    return json.loads(body)


class SealOperator(Operator):
    name = "seal"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return seal(ctx.keyring, value, ctx.associated)


class RevealOperator(Operator):
    """Passes the unsealed value through: used only where the decision says `reveal`."""

    name = "reveal"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return value
