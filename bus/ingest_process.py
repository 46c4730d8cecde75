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
    # A ^C, a hang-up or a stop sent to the whole process group (a terminal, systemd) must not
    # end this process under a worker still finishing its batches: the worker ends it (at its
    # exit, or by the watch below if it was killed outright).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
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
        self._closed = False

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
        if self._closed:
            raise IngestProcessFailed("the worker is stopping")
        self.start()
        pool = self._pool
        assert pool is not None
        digest, text = self._signers_json(signers)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _prepare, records, digest, text, redact,
                                                                    final)
        except BrokenProcessPool:
            if self._pool is pool:  # not one started since by a batch that failed first
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise IngestProcessFailed("ingest's process stopped; starting another") from None

    def close(self) -> None:
        """Stop the process (at the worker's exit) and start no other."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
