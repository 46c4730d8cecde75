"""`token`: a keyed, stable pseudonym per linkage domain (HMAC-SHA256, key id in the token)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.base import Operator, OperatorContext


def canonical_identifier(kind: str, value: str) -> bytes:
    """Kind-qualified so an NHS number and a UPN with equal text never share a token."""
    return f"{kind}:{value.strip().upper()}".encode()


def token(keyring: Keyring, domain: str, kind: str, value: str, kid: str | None = None) -> str:
    """`psn:<kid>:<base32 HMAC-SHA256>` under the linkage domain's key (the active one by default)."""
    kid, key = keyring.domain_key(domain, kid)
    mac = hmac.new(key, canonical_identifier(kind, value), sha256).digest()
    return f"psn:{kid}:{base64.b32encode(mac).decode().rstrip('=').lower()}"


def tokens_for_all_keys(keyring: Keyring, domain: str, kind: str, value: str) -> set[str]:
    """The value's token under every key id: old tokens stay resolvable after rotation."""
    return {token(keyring, domain, kind, value, kid) for kid in keyring.token.keys}


class TokenOperator(Operator):
    name = "token"

    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        return token(ctx.keyring, ctx.domain, ctx.kind, str(value))
