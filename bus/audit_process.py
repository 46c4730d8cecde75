"""The audit agent's store work (decode sg.audit messages, chain, store, sign a checkpoint), in
the worker's own threads or in a process of its own (SGBUS_AUDIT_PROCESS), so that the all-in-one
worker's event loop is not slowed by it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import ValidationError

from bus.audit.chain import AuditStore, Checkpoint, open_audit_store
from bus.audit.signer import AuditSigner, load_signer
from bus.helper_process import HelperProcess, HelperStopped, become_helper
from bus.records import AuditRecord, decode_audit_batch
from bus.settings import Settings


@dataclass(frozen=True)
class Appended:
    """What one batch of sg.audit messages did to the store."""

    added: int
    #: messages that were not a batch of audit records (counted, skipped)
    malformed: int
    #: the head to publish: the new one, or the store's latest for a batch stored before
    #: (redelivered after a crash, its head perhaps never published); None for no records
    checkpoint: Checkpoint | None


def append_messages(store: AuditStore, signer: AuditSigner | None, values: list[bytes]) -> Appended:
    """Decode, chain and store the records of `values` in one transaction."""
    records: list[AuditRecord] = []
    malformed = 0
    for value in values:
        try:
            records.extend(decode_audit_batch(value))
        except ValidationError:
            malformed += 1
    added, checkpoint = store.append(records, signer)
    if checkpoint is None and records:
        checkpoint = store.latest_checkpoint()
    return Appended(added, malformed, checkpoint)


class AuditProcessFailed(HelperStopped):
    """The audit process stopped (killed, out of memory): the batch is held and stored by a new
    one (the store skips what the stopped one had stored)."""


# In the child: its own connection to the store, and the signing key.
_store: AuditStore | None = None
_signer: AuditSigner | None = None


def _start(settings: Settings, sign: bool, parent: int) -> None:
    global _store, _signer
    become_helper("sgbus-audit", parent)
    secret = settings.audit_signing_key_json
    _signer = load_signer(settings.home, secret.get_secret_value() if secret else None) if sign else None
    _store = open_audit_store(settings)


def _append(values: list[bytes]) -> Appended:
    assert _store is not None, "started without _start"
    return append_messages(_store, _signer, values)


class AuditProcess:
    """One child process appending the audit agent's batches to the store, started at once."""

    def __init__(self, settings: Settings, *, sign: bool = True) -> None:
        self._helper = HelperProcess(_start, (settings, sign, os.getpid()), AuditProcessFailed, "the audit process")

    def start(self) -> None:
        self._helper.start()

    async def append(self, values: list[bytes]) -> Appended:
        """`append_messages` in the child. AuditProcessFailed if it stopped (restarted on the
        next call); the store's own errors as it raised them."""
        return await self._helper.run(_append, values)

    def close(self) -> None:
        """Stop the process (at the worker's exit) and start no other."""
        self._helper.close()
