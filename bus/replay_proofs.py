"""Replay proofs: what only route can make for a failed share, and checks on a replay request.

A view_failed audit record carries one (an HMAC of the ingest id and the recipient under a key
derived from the keyring); `sgbus replay --failed` reads it from the audit store (which only the
audit stage writes) and puts it in its request; route takes a recipient only with its proof. So
whoever may write sg.replay (its own principal holds no keyring) cannot send an event to a
recipient whose view never failed (bus/agents/replays.py).
"""

from __future__ import annotations

import hmac
import re

from bus.pseudonymise.keyring import Keyring

#: the key's domain: not a linkage domain's name (those allow no colon), so never a partner's key
PROOF_DOMAIN = "sgbus:replay-proof"
#: `<key id>:<hex HMAC-SHA256>`
PROOF_PATTERN = r"^[A-Za-z0-9]{1,16}:[0-9a-f]{64}$"
_PROOF = re.compile(PROOF_PATTERN)


def replay_proof(keyring: Keyring, ingest_id: str, recipient: str, kid: str | None = None) -> str:
    """The proof of (ingest id, recipient) under the active token key (or `kid`)."""
    kid, keyed = keyring.domain_mac(PROOF_DOMAIN, kid)
    mac = keyed.copy()
    mac.update(f"{ingest_id}\n{recipient}".encode())
    return f"{kid}:{mac.hexdigest()}"


def proven(keyring: Keyring, ingest_id: str, recipient: str, proof: str | None) -> bool:
    """Whether `proof` is this share's, under any key id the keyring holds (compared as bytes,
    in constant time: any text is refused, never raised on)."""
    if not proof or not _PROOF.fullmatch(proof):
        return False
    kid = proof.split(":", 1)[0]
    if kid not in keyring.token.keys:
        return False
    return hmac.compare_digest(proof.encode(), replay_proof(keyring, ingest_id, recipient, kid).encode())
