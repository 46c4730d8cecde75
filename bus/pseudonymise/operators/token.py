"""`token`: a keyed, stable pseudonym per linkage domain (HMAC-SHA256, key id in the token)."""

from __future__ import annotations

from collections.abc import Mapping
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


def b32_digest(mac: bytes) -> str:
    """Lower-case, unpadded base32 of a 32-byte digest (52 letters)."""
    if len(mac) != 32:
        raise ValueError("b32_digest encodes a 32-byte digest")
    padded, p = mac + b"\0\0\0", _PAIRS
    out: list[str] = []
    for i in range(0, 35, 5):  # 40 bits at a time: four letter pairs
        w = int.from_bytes(padded[i:i + 5], "big")
        out += (p[w >> 30], p[(w >> 20) & 1023], p[(w >> 10) & 1023], p[w & 1023])
    return "".join(out)[:52]


def token(keyring: Keyring, domain: str, kind: str, value: str, kid: str | None = None) -> str:
    """`psn:<kid>:<base32 HMAC-SHA256>` under the linkage domain's key (the active one by default)."""
    kid, keyed = keyring.domain_mac(domain, kid)
    h = keyed.copy()
    h.update(canonical_identifier(kind, value))
    return f"psn:{kid}:{b32_digest(h.digest())}"


def tokens_for_all_keys(keyring: Keyring, domain: str, kind: str, value: str) -> set[str]:
    """The value's token under every key id: old tokens stay resolvable after rotation."""
    return {token(keyring, domain, kind, value, kid) for kid in keyring.token.keys}


class TokenOperator(Operator):
    name = "token"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return token(ctx.keyring, ctx.domain, ctx.kind, str(value))
