"""Ed25519 signatures over events (publishers) and override declarations (named roles).

A signature is a JWS (RFC 7515) in compact form with a detached payload (Appendix F):
`<b64url header>..<b64url signature>`, header `{"alg":"EdDSA","kid":...}`. The payload is a
small *statement*, canonical JSON (RFC 8785), that names the event and the SHA-256 of the
canonical event without its `signature`. The statement, not the whole event, is signed so that
a recipient who sees only its minimised view can still check, from the view's provenance block
and the signer's public key, that the publisher vouched for an event with this id, type and
content digest; a recipient given the original can check the digest too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

ALG = "EdDSA"
STATEMENT_VERSION = 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url, in its one canonical form (ValueError otherwise): the lenient decoder
    takes padding, stray characters and non-zero trailing bits, so one signature could be
    written several ways."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(data) != text:
        raise ValueError("not canonical unpadded base64url")
    return data


def _plain(obj: Any) -> bool:
    """No floats and no non-BMP characters in keys: where json.dumps equals RFC 8785."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return not isinstance(obj, float)


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON. Events rarely hold floats, and without them (and with ASCII
    keys, which every schema field has) sorted, compact json.dumps gives the same bytes five
    times faster (a property test checks the two agree)."""
    if _plain(obj):
        try:
            return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 refuse it
            pass
    return rfc8785.dumps(obj)


def content_digest(event: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical event without its `signature` member. The event's random
    `nonce` (never delivered) keeps recipients from testing guesses of what their view omits
    (a full date of birth behind a year-month, an identifier behind a token) against it."""
    return hashlib.sha256(canonical({k: v for k, v in event.items() if k != "signature"})).hexdigest()


def declaration_digest(event: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical event without `signature` and `urgency.declaration`:
    what an override declaration vouches for (this child, this source, this content)."""
    unsigned = {k: v for k, v in event.items() if k != "signature"}
    urgency = unsigned.get("urgency")
    if isinstance(urgency, dict):
        unsigned["urgency"] = {k: v for k, v in urgency.items() if k != "declaration"}
    return hashlib.sha256(canonical(unsigned)).hexdigest()


def new_nonce() -> str:
    return b64url(os.urandom(16))


def event_statement(kid: str, event_id: str, event_type: str, org_id: str, digest: str) -> dict[str, Any]:
    return {"v": STATEMENT_VERSION, "kind": "event", "kid": kid, "event_id": event_id,
            "event_type": event_type, "org_id": org_id, "content_sha256": digest}


def override_statement(kid: str, event_id: str, role: str, digest: str) -> dict[str, Any]:
    """What a declarer signs: this event (id and whole content, justification included, by
    declaration_digest) and this role."""
    return {"v": STATEMENT_VERSION, "kind": "override", "kid": kid, "event_id": event_id, "role": role,
            "content_sha256": digest}


def _header(kid: str) -> str:
    return b64url(json.dumps({"alg": ALG, "kid": kid}, separators=(",", ":")).encode())


def sign_statement(key: Ed25519PrivateKey, kid: str, statement: dict[str, Any]) -> str:
    header = _header(kid)
    signing_input = f"{header}.{b64url(canonical(statement))}".encode()
    return f"{header}..{b64url(key.sign(signing_input))}"


class BadSignature(ValueError):
    """A signature that is malformed or does not verify; the message is a reason code."""


@dataclass(frozen=True)
class Jws:
    kid: str
    header: str
    signature: bytes


def parse_jws(value: str) -> Jws:
    parts = value.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise BadSignature("malformed_signature")
    try:
        header = json.loads(b64url_decode(parts[0]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise BadSignature("malformed_signature") from None
    if not isinstance(header, dict) or header.get("alg") != ALG or not isinstance(header.get("kid"), str) \
            or set(header) != {"alg", "kid"} or len(signature) != 64:
        raise BadSignature("malformed_signature")
    return Jws(header["kid"], parts[0], signature)


_P = 2**255 - 19


def usable_public_key(raw: bytes) -> bool:
    """An Ed25519 public key that can vouch for something: 32 bytes, canonically encoded, not of
    small order. OpenSSL takes a small-order key, and under one a trivial signature verifies for
    any message (the identity point with R = identity, S = 0); no honest key is one."""
    if len(raw) != 32 or int.from_bytes(raw, "little") & ((1 << 255) - 1) >= _P:
        return False
    try:
        crypto_sign_ed25519_pk_to_curve25519(raw)  # libsodium refuses small-order points
    except Exception:  # PyNaCl raises its own RuntimeError
        return False
    return True


@lru_cache(maxsize=4096)
def _libsodium_key(raw: bytes) -> VerifyKey:
    return VerifyKey(raw)


def ed25519_verifies(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public_key`'s over `message`, by libsodium (see verify_statement)."""
    try:
        _libsodium_key(public_key.public_bytes_raw()).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_statement(jws: Jws, public_key: Ed25519PublicKey, statement: dict[str, Any]) -> None:
    """Raises BadSignature("bad_signature") unless `jws` signs `statement` with `public_key`.

    Verified by libsodium (PyNaCl), not OpenSSL (cryptography, which signs): 39 against 83 µs a
    signature on the benchmark machine, a quarter of ingest's CPU an event before (docs/BENCHMARKS.md,
    session 23). libsodium is also the stricter of the two: it refuses small-order keys and
    non-canonical encodings, which no honest RFC 8032 signer produces (tests/unit/test_signing.py)."""
    signing_input = f"{jws.header}.{b64url(canonical(statement))}".encode()
    if not ed25519_verifies(public_key, jws.signature, signing_input):
        raise BadSignature("bad_signature")


def _event_id(event: dict[str, Any]) -> str:
    # as the verifier reads it (a UUID in canonical form), however the publisher wrote it
    try:
        return str(uuid.UUID(str(event["event_id"])))
    except ValueError:
        return str(event["event_id"])


def sign_event(event: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    """A copy of `event` (a JSON object) with a `nonce` (if it had none) and its `signature`
    set: what a publisher sends."""
    unsigned = {k: v for k, v in event.items() if k != "signature"}
    unsigned.setdefault("nonce", new_nonce())
    statement = event_statement(kid, _event_id(unsigned), str(unsigned["event_type"]),
                                str(unsigned["source"]["org_id"]), content_digest(unsigned))
    return {**unsigned, "signature": sign_statement(key, kid, statement)}


def declare_override(event: dict[str, Any], key: Ed25519PrivateKey, kid: str, role: str) -> dict[str, Any]:
    """A copy of `event` whose `urgency` carries a declaration signed by a named role's key.
    Sign the event itself (sign_event) afterwards: the declaration is part of its content."""
    declared = {k: v for k, v in event.items() if k != "signature"}
    declared.setdefault("nonce", new_nonce())
    urgency = {k: v for k, v in dict(declared["urgency"]).items() if k != "declaration"}
    urgency["declared_by_role"] = role
    declared["urgency"] = urgency
    statement = override_statement(kid, _event_id(declared), role, declaration_digest(declared))
    declared["urgency"] = {**urgency, "declaration": sign_statement(key, kid, statement)}
    return declared
