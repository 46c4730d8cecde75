"""`token`: a keyed, stable pseudonym per linkage domain (HMAC-SHA256, key id in the token)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.base import Operator, OperatorContext


def canonical_identifier(kind: str, value: str) -> bytes:
    """Kind-qualified so an NHS number and a UPN with equal text never share a token."""
    return f"{kind}:{value.strip().upper()}".encode()


# Routing makes several tokens per delivery, and the standard library's HMAC set-up and base32
# (pure Python) were most of each token's time; the results are byte for byte the same
# (tests/unit/test_operators.py holds them to hmac.new and base64.b32encode).
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit group as its two letters
_KEYED: dict[bytes, hmac.HMAC] = {}  # an HMAC-SHA256 already keyed, per domain key: copied per token
_KEYED_MAX = 256


def b32_digest(mac: bytes) -> str:
    """Lower-case, unpadded base32 of a 32-byte digest (52 letters)."""
    padded, p = mac + b"\0\0\0", _PAIRS
    out: list[str] = []
    for i in range(0, 35, 5):  # 40 bits at a time: four letter pairs
        w = int.from_bytes(padded[i:i + 5], "big")
        out += (p[w >> 30], p[(w >> 20) & 1023], p[(w >> 10) & 1023], p[w & 1023])
    return "".join(out)[:52]


def _mac(key: bytes, message: bytes) -> bytes:
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= _KEYED_MAX:  # keys only come and go with rotations
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod=sha256)
    h = keyed.copy()
    h.update(message)
    return h.digest()


def token(keyring: Keyring, domain: str, kind: str, value: str, kid: str | None = None) -> str:
    """`psn:<kid>:<base32 HMAC-SHA256>` under the linkage domain's key (the active one by default)."""
    kid, key = keyring.domain_key(domain, kid)
    return f"psn:{kid}:{b32_digest(_mac(key, canonical_identifier(kind, value)))}"


def tokens_for_all_keys(keyring: Keyring, domain: str, kind: str, value: str) -> set[str]:
    """The value's token under every key id: old tokens stay resolvable after rotation."""
    return {token(keyring, domain, kind, value, kid) for kid in keyring.token.keys}


class TokenOperator(Operator):
    name = "token"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return token(ctx.keyring, ctx.domain, ctx.kind, str(value))
