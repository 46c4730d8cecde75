"""An agent's, timer's or task's unexpected error (a bug) stops the worker, reported by its type
and where it was raised, never by its message: a message can quote the event being handled."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from bus import logs
from bus.exceptions import SgbusError

log = logs.get("sgbus.worker")

P = ParamSpec("P")

#: the innermost frames named in `agent_failed` (file, line, function: code, not data)
FRAMES = 12


class AgentFailed(SgbusError):
    """An agent, timer or task raised an error that is not sgbus's own: the worker stops on it."""


def where(exc: BaseException) -> list[str]:
    """Where `exc` was raised, innermost last: each frame's file, line and function only."""
    return [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)[-FRAMES:]]


def guarded(name: str, body: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """`body` (an agent, timer or task) with its unexpected errors coming out as `AgentFailed`.

    sgbus's own errors pass with their messages (written to carry no identifiers or event text),
    but not the errors chained to them. Any other error is logged as `agent_failed` with its type
    and frames, and re-raised as `AgentFailed` with no link to it: Faust logs a crashing agent's
    error with its message, its traceback and every error chained to it (a pydantic error, say,
    quotes the value it refused), and the worker's log is an operator's, not a place for a
    child's data."""

    @functools.wraps(body)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await body(*args, **kwargs)
            return
        except SgbusError as exc:
            # Ours, but one raised `from` a library's error would still print that error (and
            # its message) beneath it: only its own message, written to be safe, goes on.
            exc.__cause__, exc.__suppress_context__ = None, True
            raise
        except Exception as exc:  # a bug: described safely below
            kind, frames = type(exc).__name__, where(exc)
        log.error("agent_failed", agent=name, error=kind, where=frames)
        # Raised outside the handler, so the original error is neither its cause nor its context.
        raise AgentFailed(f"{kind} in {name}: the worker stops; its message is not shown, as it can "
                          f"quote event data (where it was raised: the agent_failed log line)")

    return run
