"""At-least-once sends that a commit must not pass: what was sent since the last commit, and
the first send the broker refused."""

from __future__ import annotations

import asyncio
from typing import Any


class SendFailed(Exception):
    """A record the worker sent was not written; its batch's offsets must not be committed."""


#: how many sends are kept before the delivered ones are dropped between commits
_PRUNE_AT = 50_000


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
            error = (asyncio.CancelledError("the send was cancelled before it was written") if fut.cancelled()
                     else fut.exception())  # also marks the error retrieved (no asyncio warning)
            if error is not None and self._failed is None:
                self._failed = (topic, error)
        self._pending = still
