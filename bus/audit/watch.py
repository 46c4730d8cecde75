"""The audit stage's own check of the chain: verified with the public keys only, at an interval, into metrics."""

from __future__ import annotations

import time

from bus import logs
from bus.audit.chain import Verification, open_audit_store, verify
from bus.audit.signer import load_verifier, public_keys_path
from bus.metrics import Metrics
from bus.settings import Settings

log = logs.get("sgbus.audit.watch")


def verify_into_metrics(settings: Settings, metrics: Metrics) -> Verification | None:
    """Walk the chain and its signed checkpoints (as `sgbus audit verify --offline` does) and set
    sgbus_audit_chain_verified / _length / _last_verified_timestamp_seconds. A store that cannot be
    read counts as not verified (the alert should fire: nobody can vouch for the trail)."""
    try:
        verifier = load_verifier(settings.audit_public_keys or public_keys_path(settings.home))
        store = open_audit_store(settings)
        try:
            result = verify(store, verifier)
        finally:
            store.close()
    except Exception as exc:  # reported, never raised into the agent
        metrics.audit_chain_verified.set(0)
        log.error("audit_verification_could_not_run", error=type(exc).__name__)
        return None
    metrics.audit_chain_verified.set(1 if result.ok else 0)
    metrics.audit_chain_length.set(result.records)
    metrics.audit_chain_last_verified.set(time.time())
    if not result.ok:
        log.error("audit_chain_verification_failed", first_bad_seq=result.first_bad_seq, problem=result.problem)
    return result
