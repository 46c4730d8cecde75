"""Ingest's CPU work (parse, verify, pseudonymise, redact: bus/ingest.py `prepare_batch`) in a
process of its own, so that the all-in-one worker's event loop routes one batch while the next
is prepared (SGBUS_INGEST_PROCESS)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from pydantic import ValidationError

from bus.helper_process import HelperProcess, HelperStopped
from bus.ingest import IngestOutcome, Record, internal_error, prepare_batch, rejected_record
from bus.policy.data import RedactPlan
from bus.provenance.registry import SignerRegistry
from bus.pseudonymise.keyring import KeyringWatch
from bus.records import PseudonymisedEvent


class IngestProcessFailed(HelperStopped):
    """Ingest's process stopped (killed, out of memory): the batch is held and prepared again
    in a new one."""


# In the child: its own view of the keyring file (re-read when rotated, as the worker's is)
# and the last signing key register it was handed.
_keys: KeyringWatch | None = None
_signers: tuple[str, SignerRegistry] | None = None


def _start(keyring_path: str, keyring_secret: str | None) -> None:
    global _keys
    _keys = KeyringWatch(Path(keyring_path), keyring_secret)
    from bus.redaction import warm_up

    warm_up()  # the model loads while the worker connects to Kafka


def _prepare(records: list[Record], signers_digest: str, signers_json: str, redact: RedactPlan,
             final: bool) -> list[IngestOutcome | None]:
    global _signers
    assert _keys is not None, "started without _start"
    if _signers is None or _signers[0] != signers_digest:
        _signers = (signers_digest, SignerRegistry.model_validate_json(signers_json))
    return [_as_json(out) for out in prepare_batch(records, _signers[1], _keys(), redact, final=final)]


def _as_json(out: IngestOutcome | None) -> IngestOutcome | None:
    """An event goes back as its JSON, which the worker writes to sg.events as it is: pickling
    the model here and unpickling it there cost more than serialising it once here and
    validating it there (19 + 18 against 7 + 14 µs an event; docs/BENCHMARKS.md session 24)."""
    if out is None or out.event is None:
        return out
    return dataclasses.replace(out, event=None, event_json=out.event.model_dump_json().encode())


def _from_json(out: IngestOutcome | None, record: Record) -> IngestOutcome | None:
    if out is None or out.event_json is None:
        return out
    # The route stage reads sg.events the same way: the event's own model, validated again.
    try:
        return dataclasses.replace(out, event=PseudonymisedEvent.model_validate_json(out.event_json))
    except ValidationError as exc:
        # Not expected (ingest validates each model as it builds it), but a bug must cost one
        # event, dead-lettered, not stop the worker on the same batch at every start.
        return rejected_record(record, internal_error(exc))


class IngestProcess:
    """One child process preparing the worker's ingest batches, started at once (it loads the
    redaction model) and again after it stopped."""

    def __init__(self, keyring_path: Path, keyring_secret: str | None) -> None:
        self._helper = HelperProcess("sgbus-ingest", _start, (str(keyring_path), keyring_secret),
                                     IngestProcessFailed, "ingest's process")
        self._signers: tuple[SignerRegistry, str, str] | None = None

    def start(self) -> None:
        self._helper.start()

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
        digest, text = self._signers_json(signers)
        outcomes: list[IngestOutcome | None] = await self._helper.run(_prepare, records, digest, text, redact, final)
        return [_from_json(out, record) for out, record in zip(outcomes, records, strict=True)]

    def close(self) -> None:
        """Stop the process (at the worker's exit) and start no other."""
        self._helper.close()
