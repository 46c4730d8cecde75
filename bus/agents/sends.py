"""At-least-once sends that a commit must not pass: what was sent since the last commit, and
the first send the broker refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bus import logs
from bus.records import DeadLetter

log = logs.get("sgbus.agents")


class SendFailed(Exception):
    """A record the worker sent was not written; its batch's offsets must not be committed."""


#: how many sends are kept before the delivered ones are dropped between commits
_PRUNE_AT = 50_000


def _error_of(sent: asyncio.Future[Any]) -> BaseException | None:
    """Why a finished send was not written (None if it was); marks its error retrieved, so
    asyncio does not warn of it."""
    if sent.cancelled():
        return asyncio.CancelledError("the send was cancelled before it was written")
    return sent.exception()


class SendLedger:
    """The worker's sends (their producer futures) since the last commit.

    Why: Faust flushes the producer before it commits the consumed offsets, but a flush only
    waits; it does not say whether a send failed. A send the broker refused for good (no write
    permission, a record too large) would be committed past and lost without a word. The
    consumer asks `failure()` after the flush and before it commits (bus/faust_kafka.py)."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._failed: tuple[str, BaseException] | None = None

    def track(self, topic: str, sent: Any) -> None:
        if not isinstance(sent, asyncio.Future):
            return  # not a producer future (exactly-once sends return none: the transaction fails)
        self._pending.append((topic, sent))
        if len(self._pending) >= _PRUNE_AT:
            self._settle()

    def failure(self) -> tuple[str, BaseException] | None:
        """(topic, error) of the first send that failed, for good; None when none has. Sends
        still in flight are kept for the next call; delivered ones are forgotten."""
        self._settle()
        return self._failed

    def _settle(self) -> None:
        still: list[tuple[str, asyncio.Future[Any]]] = []
        for topic, fut in self._pending:
            if not fut.done():
                still.append((topic, fut))
                continue
            error = _error_of(fut)
            if error is not None and self._failed is None:
                self._failed = (topic, error)
        self._pending = still


class BatchSends:
    """An exactly-once stage's sends since its last commit (their producer futures).

    Why: aiokafka reports a record the broker refuses for good (too large for the topic's
    `max.message.bytes`, say, or an unknown producer after a broker lost its log) only through
    that record's future: the transaction does not fail, and committing it would commit the
    batch's offsets without the record, which is then never written. So the stage waits for
    its batch's sends before it commits, and commits only if every one was written."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []

    def track(self, topic: str, sent: Any) -> None:
        if isinstance(sent, asyncio.Future):
            self._pending.append((topic, sent))

    async def failure(self) -> tuple[str, BaseException] | None:
        """Wait for every send since the last call; (topic, error) of the first that was not
        written, None when all were. Each call starts afresh."""
        pending, self._pending = self._pending, []
        if not pending:
            return None
        await asyncio.wait([fut for _, fut in pending])
        failed: tuple[str, BaseException] | None = None
        for topic, fut in pending:
            error = _error_of(fut)
            if error is not None and failed is None:
                failed = (topic, error)
        return failed


def shortened(dl: DeadLetter, error: BaseException) -> DeadLetter:
    """`dl` cut to its position and first reason, and why it was cut (the error's type only)."""
    return dl.model_copy(update={"reasons": [*dl.reasons[:1], {
        "field": "$", "code": "dead_letter_shortened", "message": type(error).__name__}]})


async def send_dead_letter(send: Callable[[bytes, bytes], Awaitable[Any]], dl: DeadLetter) -> None:
    """Send `dl` (key: its id). If the producer refuses it at once (too large for the topic,
    say), its position and first reason still go: a rejected event is never dropped silently.
    If that is refused too, the error goes up and the batch is not committed."""
    key = str(dl.dlq_id).encode()
    try:
        await send(key, dl.model_dump_json().encode())
    except Exception as exc:
        log.error("dead_letter_send_failed_sending_shorter", error=type(exc).__name__, topic=dl.topic,
                  offset=dl.offset)
        await send(key, shortened(dl, exc).model_dump_json().encode())
