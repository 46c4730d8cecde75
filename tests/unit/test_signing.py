"""Publisher signature verification (libsodium): what an honest signer makes verifies, anything
else is refused with the one reason code, including forgeries OpenSSL's verification lets through."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bus.provenance.signing import BadSignature, event_statement, parse_jws, sign_statement, verify_statement


def _statement(digest: str = "ab" * 32) -> dict[str, object]:
    return event_statement("kid-1", "7d0c1a56-0a47-4d7e-9a53-4e0e1c3f9a11", "police.domestic_abuse_incident.v1",
                           "NSP", digest)


def test_a_signature_made_with_cryptography_verifies_and_any_other_statement_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    jws = parse_jws(sign_statement(key, "kid-1", _statement()))
    verify_statement(jws, key.public_key(), _statement())
    with pytest.raises(BadSignature, match="bad_signature"):
        verify_statement(jws, key.public_key(), _statement(digest="cd" * 32))
    with pytest.raises(BadSignature, match="bad_signature"):
        verify_statement(jws, Ed25519PrivateKey.generate().public_key(), _statement())


def test_a_small_order_key_in_the_register_verifies_nothing() -> None:
    """With the identity point as a registered key, the "signature" R = identity, S = 0 satisfies
    the cofactorless check for every message: OpenSSL (cryptography 50) accepts it, so a register
    entry made by mistake or malice would let anyone publish as that organisation. libsodium
    refuses small-order keys."""
    identity = bytes([1] + [0] * 31)
    forged = parse_jws(sign_statement(Ed25519PrivateKey.generate(), "kid-1", _statement()))
    forged = type(forged)(forged.kid, forged.header, identity + bytes(32))
    with pytest.raises(BadSignature, match="bad_signature"):
        verify_statement(forged, Ed25519PublicKey.from_public_bytes(identity), _statement())
