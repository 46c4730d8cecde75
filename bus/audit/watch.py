"""The audit stage's own check of the chain: verified with the public keys only, at an interval, into metrics."""

from __future__ import annotations

import time

from bus import logs
from bus.audit.chain import Checkpoint, Verification, open_audit_store, verify
from bus.audit.signer import load_verifier, public_keys_path
from bus.metrics import Metrics
from bus.settings import Settings

log = logs.get("sgbus.audit.watch")


class AuditWatch:
    """Verifies the chain (as `sgbus audit verify` does) against the newest head this process
    published to sg.audit.heads, so an insider who removes the newest records together with their
    checkpoints is caught too; a chain shorter than at the last verification fails as well."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.published: Checkpoint | None = None
        self.verified_length = 0
        #: the last walk that passed, where the next may continue from; None: walk the whole chain
        self.passed: Verification | None = None
        self._whole_walk_at = 0.0  # monotonic

    def run(self) -> Verification | None:
        """Set sgbus_audit_chain_verified / _length / _last_verified_timestamp_seconds. A store that
        cannot be read counts as not verified (nobody can vouch for the trail)."""
        m = self.metrics
        # Before the store is read: a head is published only once its records are committed, so
        # the snapshot verify() reads holds at least the chain up to it.
        published = self.published
        # A whole walk costs time in proportion to the chain's length (~17-50 µs a record, in the
        # worker's process). With SGBUS_AUDIT_FULL_VERIFY_INTERVAL_S set, only what was appended
        # is walked in between; never after a walk that did not pass. Unset, every walk is whole:
        # only a whole walk catches an old row altered in place, so a longer wait for that is
        # the operator's choice, not a default.
        every = self.settings.audit_full_verify_interval_s
        whole = (self.passed is None or every is None or every <= self.settings.audit_verify_interval_s
                 or time.monotonic() - self._whole_walk_at >= every)
        started = time.monotonic()
        try:
            verifier = load_verifier(self.settings.audit_public_keys or public_keys_path(self.settings.home))
            store = open_audit_store(self.settings)
            try:
                result = verify(store, verifier, published, since=None if whole else self.passed)
            finally:
                store.close()
        except Exception as exc:  # reported, never raised into the agent
            m.audit_chain_verified.set(0)
            self.passed = None
            log.error("audit_verification_could_not_run", error=type(exc).__name__)
            return None
        ok = result.ok and result.records >= self.verified_length
        m.audit_chain_verified.set(1 if ok else 0)
        m.audit_chain_length.set(result.records)
        self.passed = result if ok else None
        if ok:
            self.verified_length = result.records
            m.audit_chain_last_verified.set(time.time())
            if whole:
                self._whole_walk_at = started
                m.audit_chain_last_full_verified.set(time.time())
        elif result.ok:
            log.error("audit_chain_verification_failed", problem="the chain is shorter than when last verified",
                      records=result.records, verified_before=self.verified_length)
        else:
            log.error("audit_chain_verification_failed", first_bad_seq=result.first_bad_seq, problem=result.problem)
        return result
