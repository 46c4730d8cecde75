"""Publisher signature verification (libsodium): what an honest signer makes verifies, anything
else is refused with the one reason code, including forgeries OpenSSL's verification lets through."""

from __future__ import annotations

from pathlib import Path

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


_P = 2**255 - 19
SMALL_ORDER = {
    "identity": bytes([1] + [0] * 31),
    "order 2": (_P - 1).to_bytes(32, "little"),
    "order 4": bytes(32),
    "order 8": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    "identity, non-canonical": (_P + 1).to_bytes(32, "little"),
}


@pytest.mark.parametrize("name", sorted(SMALL_ORDER))
def test_a_small_order_or_non_canonical_key_is_refused_from_the_register(name: str) -> None:
    from pydantic import ValidationError

    from bus.provenance.registry import PublisherKey
    from bus.provenance.signing import b64url, usable_public_key

    raw = SMALL_ORDER[name]
    assert not usable_public_key(raw)
    with pytest.raises(ValidationError, match="small order or encoded non-canonically"):
        PublisherKey(kid="police-nsp-1", agency="police", org_id="NSP", public_key=b64url(raw),
                     issued_at="2026-11-28T00:00:00+00:00")


def test_an_honest_key_is_usable_and_checkpoints_verify_with_libsodium(tmp_path: Path) -> None:
    import json

    from bus.audit.signer import AuditSigner, load_verifier
    from bus.exceptions import KeyringError
    from bus.provenance.signing import b64url, usable_public_key

    signer = AuditSigner("audit-1", Ed25519PrivateKey.generate())
    assert usable_public_key(signer.key.public_key().public_bytes_raw())
    keys = tmp_path / "public-keys.json"
    keys.write_text(json.dumps({"keys": {"audit-1": signer.public_raw()}}))
    verifier = load_verifier(keys)
    assert verifier.verify("audit-1", signer.sign(b"head"), b"head")
    assert not verifier.verify("audit-1", signer.sign(b"head"), b"another head")
    keys.write_text(json.dumps({"keys": {"audit-1": signer.public_raw(), "forged": b64url(SMALL_ORDER["identity"])}}))
    with pytest.raises(KeyringError, match="forged of small order"):
        load_verifier(keys)


def test_a_signature_has_one_written_form() -> None:
    """Padding, stray characters or other trailing bits would let the stored signature differ from
    what the publisher sent while still verifying."""
    from bus.provenance.signing import BadSignature, b64url, parse_jws

    good = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.." + b64url(bytes(range(64)))
    assert parse_jws(good).signature == bytes(range(64))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other_bits = good[:-1] + alphabet[alphabet.index(good[-1]) ^ 1]  # the same 64 bytes, another unused bit
    for variant in (good + "==", good[:40] + "\n" + good[40:], other_bits):
        with pytest.raises(BadSignature):
            parse_jws(variant)
