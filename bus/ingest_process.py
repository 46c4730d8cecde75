"""Ingest's CPU work (parse, verify, pseudonymise, redact: bus/ingest.py `prepare_batch`) in a
process of its own, so that the all-in-one worker's event loop routes one batch while the next
is prepared (SGBUS_INGEST_PROCESS)."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from bus.exceptions import SgbusError
from bus.ingest import IngestOutcome, Record, prepare_batch
from bus.policy.data import RedactPlan
from bus.provenance.registry import SignerRegistry
from bus.pseudonymise.keyring import KeyringWatch


class IngestProcessFailed(SgbusError):
    """Ingest's process stopped (killed, out of memory): the batch is held and prepared again
    in a new one."""


# In the child: its own view of the keyring file (re-read when rotated, as the worker's is)
# and the last signing key register it was handed.
_keys: KeyringWatch | None = None
_signers: tuple[str, SignerRegistry] | None = None


def _start(keyring_path: str, keyring_secret: str | None, parent: int) -> None:
    global _keys
    # A terminal's ^C reaches the whole process group: the worker stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keys = KeyringWatch(Path(keyring_path), keyring_secret)
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    from bus.redaction import warm_up

    warm_up()  # the model loads while the worker connects to Kafka


def _exit_with(parent: int) -> None:
    # A worker killed outright (SIGKILL, OOM) cannot stop this process: leave when it is gone.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _prepare(records: list[Record], signers_digest: str, signers_json: str, redact: RedactPlan,
             final: bool) -> list[IngestOutcome | None]:
    global _signers
    assert _keys is not None, "started without _start"
    if _signers is None or _signers[0] != signers_digest:
        _signers = (signers_digest, SignerRegistry.model_validate_json(signers_json))
    return prepare_batch(records, _signers[1], _keys(), redact, final=final)


def _ready() -> bool:
    return _keys is not None


class IngestProcess:
    """One child process preparing the worker's ingest batches, started at once (it loads the
    redaction model) and again after it stopped."""

    def __init__(self, keyring_path: Path, keyring_secret: str | None) -> None:
        self._args = (str(keyring_path), keyring_secret, os.getpid())
        self._pool: ProcessPoolExecutor | None = None
        self._signers: tuple[SignerRegistry, str, str] | None = None

    def start(self) -> None:
        if self._pool is None:
            # spawn, not fork: the worker has threads (Kafka, metrics) by now.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=self._args)
            self._pool.submit(_ready)  # start it now, not on the first batch

    def _signers_json(self, signers: SignerRegistry) -> tuple[str, str]:
        # The register changes rarely: serialised once per register read, not per batch.
        if self._signers is None or self._signers[0] is not signers:
            text = signers.model_dump_json()
            self._signers = (signers, hashlib.sha256(text.encode()).hexdigest(), text)
        return self._signers[1], self._signers[2]

    async def prepare(self, records: list[Record], signers: SignerRegistry, redact: RedactPlan, *,
                      final: bool) -> list[IngestOutcome | None]:
        """`prepare_batch` in the child. IngestProcessFailed if it stopped (restarted on the
        next call); RedactorUnavailable as the redactor raises it there."""
        self.start()
        assert self._pool is not None
        digest, text = self._signers_json(signers)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, _prepare, records, digest, text, redact, final)
        except BrokenProcessPool:
            self.close()
            raise IngestProcessFailed("ingest's process stopped; starting another") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
