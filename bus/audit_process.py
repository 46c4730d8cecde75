"""The audit agent's store work (decode sg.audit messages, chain, store, sign a checkpoint), in
one of the worker's threads or in a process of its own (SGBUS_AUDIT_PROCESS), so that the
all-in-one worker's event loop is not slowed by it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bus import logs
from bus.audit.chain import AuditStore, Checkpoint
from bus.audit.signer import AuditSigner, load_signer
from bus.helper_process import HelperClosed, HelperProcess, HelperStopped, describe
from bus.metrics import Metrics
from bus.records import AuditRecord, decode_audit_batch
from bus.settings import Settings

log = logs.get("sgbus.worker")


@dataclass(frozen=True)
class Appended:
    """What one batch of sg.audit messages did to the store."""

    added: int
    #: messages that were not a batch of audit records (counted, skipped)
    malformed: int
    #: the head to publish: the new one, or the store's latest for a batch stored before
    #: (redelivered after a crash, its head perhaps never published); None for no records
    checkpoint: Checkpoint | None


def append_messages(store: AuditStore, signer: AuditSigner | None, values: list[bytes],
                    anchor: Checkpoint | None = None) -> Appended:
    """Decode, chain and store the records of `values` in one transaction (AuditStore.append)."""
    records: list[AuditRecord] = []
    malformed = 0
    for value in values:
        try:
            records.extend(decode_audit_batch(value))
        except ValidationError:
            malformed += 1
    added, checkpoint = store.append(records, signer, anchor)
    if checkpoint is None and records:
        checkpoint = store.latest_checkpoint()
    return Appended(added, malformed, checkpoint)


class AuditProcessFailed(HelperStopped):
    """The audit process stopped (killed, out of memory): the batch is held and stored by a new
    one (the store skips what the stopped one had stored)."""


# In the child: its own connection to the store, and the signing key.
_store: AuditStore | None = None
_signer: AuditSigner | None = None


@dataclass(frozen=True)
class _StoreAccess:
    """All the child is given: where the store is and the signing key (no other secret of the
    worker's settings)."""

    home: Path
    db: Path
    dsn: str | None = field(repr=False)
    signing_key_json: str | None = field(repr=False)
    sign: bool


def _start(access: _StoreAccess) -> None:
    global _store, _signer
    _signer = load_signer(access.home, access.signing_key_json) if access.sign else None
    _store = AuditStore(dsn=access.dsn) if access.dsn is not None else AuditStore(access.db)


def _append(values: list[bytes], anchor: Checkpoint | None) -> Appended:
    # A connection the database dropped is mended by the store itself before its next write.
    assert _store is not None, "started without _start"
    return append_messages(_store, _signer, values, anchor)


class AuditProcess:
    """One child process appending the audit agent's batches to the store, started at once."""

    def __init__(self, settings: Settings, *, sign: bool = True) -> None:
        key = settings.audit_signing_key_json
        access = _StoreAccess(settings.home, settings.audit_db_path,
                              settings.audit_dsn.get_secret_value() if settings.audit_dsn else None,
                              key.get_secret_value() if key else None, sign)
        self._helper = HelperProcess("sgbus-audit", _start, (access,), AuditProcessFailed, "the audit process")

    def start(self) -> None:
        self._helper.start()

    async def append(self, values: list[bytes], anchor: Checkpoint | None = None) -> Appended:
        """`append_messages` in the child. AuditProcessFailed if it stopped (restarted on the
        next call); the store's own errors as it raised them."""
        return await self._helper.run(_append, values, anchor)

    def close(self) -> None:
        """Stop the process (at the worker's exit) and start no other."""
        self._helper.close()


class AuditWriter:
    """The audit agent's one way to store a batch: in the audit process if there is one, else in
    a thread; counted in the worker's metrics. While the audit process is being replaced, or the
    store cannot be written (out of reach, or refusing: a chain past its last signed checkpoint),
    the batch is held and retried, never skipped: nothing after it is committed meanwhile. The
    store skips whatever a stopped process had stored."""

    def __init__(self, store: AuditStore, signer: AuditSigner | None, metrics: Metrics,
                 process: AuditProcess | None, max_backoff_s: float) -> None:
        # One append at a time without a lock: the audit agent is one actor, and verification
        # reads a snapshot of the chain (AuditStore.snapshot).
        self.store, self.signer, self.metrics, self.process = store, signer, metrics, process
        self.max_backoff_s = max_backoff_s
        #: the last head published outside the database: every append must still find it there
        self.anchor: Checkpoint | None = None

    async def write(self, values: list[bytes]) -> Appended:
        backoff = 0.1
        while True:
            try:
                if self.process is not None:
                    done = await self.process.append(values, self.anchor)
                else:
                    done = await asyncio.to_thread(append_messages, self.store, self.signer, values, self.anchor)
                break
            except HelperClosed:
                raise
            except Exception as exc:  # the store's driver raises several types; described safely
                if isinstance(exc, AuditProcessFailed) and not exc.set_up_failed:
                    self.metrics.audit_process_failed.inc()
                    log.error("audit_process_failed_holding_batch", messages=len(values), retry_in_s=backoff,
                              cause=str(exc))
                else:  # the store out of reach or refusing (or, for a process's set-up, the signing key)
                    self.metrics.audit_store_failed.inc()
                    log.error("audit_store_unavailable_holding_batch", messages=len(values), retry_in_s=backoff,
                              cause=describe(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
        for _ in range(done.malformed):
            self.metrics.dlq.labels("malformed_audit").inc()
        self.metrics.audit_stored.inc(done.added)
        return done
