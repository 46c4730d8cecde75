"""A bug in an agent stops the worker by the error's type and place, never its message: the
message can quote the event the agent was handling, and Faust logs it as the worker stops."""

from __future__ import annotations

import ast
import asyncio
import inspect
import io
import logging
import traceback
from pathlib import Path

import pytest
from mode import Service
from pydantic import BaseModel
from structlog.testing import capture_logs

from bus.agents.guard import AgentFailed, guarded
from bus.redaction.errors import RedactorUnavailable

MARKER = "MARKER-CHILD-9434765919"
BUS = Path(__file__).parents[2] / "bus"


class _Child(BaseModel):
    nhs_number: int


async def _refuses_a_value(stream: object) -> None:
    _Child.model_validate({"nhs_number": MARKER})  # pydantic's error quotes the value it refused


async def _raises_with_data(stream: object) -> None:
    try:
        raise KeyError(MARKER)
    except KeyError as exc:
        raise RuntimeError(f"while handling {MARKER}") from exc


def _failure(body: object) -> AgentFailed:
    with pytest.raises(AgentFailed) as raised:
        asyncio.run(guarded("sgbus.route", body)(None))  # type: ignore[arg-type]
    return raised.value


@pytest.mark.parametrize("body", [_refuses_a_value, _raises_with_data])
def test_an_agent_s_unexpected_error_stops_it_by_type_and_place_not_message(body: object) -> None:
    with capture_logs() as logged:
        failure = _failure(body)
    shown = "".join(traceback.format_exception(failure))
    assert MARKER not in shown and MARKER not in str(failure)
    assert failure.__cause__ is None and failure.__context__ is None  # nothing chained to print
    [entry] = [e for e in logged if e["event"] == "agent_failed"]
    assert entry["agent"] == "sgbus.route" and entry["error"] in ("ValidationError", "RuntimeError")
    assert any(body.__name__ in frame for frame in entry["where"])  # type: ignore[attr-defined]
    assert MARKER not in repr(logged)


def test_what_mode_logs_as_the_worker_stops_carries_no_event_data() -> None:
    failure = _failure(_refuses_a_value)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    try:
        async def crash() -> None:
            try:
                raise failure
            except AgentFailed as exc:
                await Service().crash(exc)  # what Faust's agent, task and timer runners do with it

        asyncio.run(crash())
    finally:
        logging.getLogger().removeHandler(handler)
    assert "Crashed reason=AgentFailed" in out.getvalue() and "ValidationError in sgbus.route" in out.getvalue()
    assert MARKER not in out.getvalue()


def test_sgbus_s_own_errors_pass_with_their_message_but_not_what_is_chained_to_them() -> None:
    async def outage(stream: object) -> None:
        try:
            raise OSError(f"cannot read {MARKER}")
        except OSError as exc:
            raise RedactorUnavailable("the redaction model could not be loaded (OSError)") from exc

    with capture_logs() as logged, pytest.raises(RedactorUnavailable, match="could not be loaded") as raised:
        asyncio.run(guarded("sgbus.ingest", outage)(None))
    assert MARKER not in "".join(traceback.format_exception(raised.value))
    assert not [e for e in logged if e["event"] == "agent_failed"]  # not a bug: its own log lines say what it is


def test_cancellation_passes_as_it_is() -> None:
    """Faust cancels an agent on a rebalance and restarts it: that must not stop the worker."""
    async def cancelled(stream: object) -> None:
        raise asyncio.CancelledError

    with capture_logs() as logged, pytest.raises(asyncio.CancelledError):
        asyncio.run(guarded("sgbus.route", cancelled)(None))
    assert not logged


def test_a_guarded_function_keeps_its_signature() -> None:
    """Faust passes the app to a task or timer whose signature takes one: the wrapper must not."""
    async def no_arguments() -> None:
        return None

    async def agent(stream: object) -> None:
        return None

    assert not inspect.signature(guarded("t", no_arguments)).parameters
    assert list(inspect.signature(guarded("a", agent)).parameters) == ["stream"]


def test_a_finished_agent_returns_quietly() -> None:
    async def done(stream: object) -> None:
        return None

    assert asyncio.run(guarded("sgbus.route", done)(None)) is None


REGISTERS = ("agent", "timer", "task", "crontab", "service")


def _registers(node: ast.expr) -> bool:
    """`x.agent(...)`, `x.timer(...)`, `x.crontab(...)` (called to make a decorator) or `x.task`."""
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr in REGISTERS and not (
        isinstance(node.value, ast.Name) and node.value.id in ("asyncio", "loop"))


def test_every_agent_timer_and_task_the_worker_registers_is_guarded() -> None:
    """`app.agent(...)(f)`, `app.timer(...)(f)`, `app.task(f)`: f must be `guarded(...)`; never
    the decorator forms, which cannot be."""
    registered, unguarded = 0, []
    for path in BUS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(BUS.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                unguarded += [where for d in node.decorator_list if _registers(d)]
                continue
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Call) and _registers(node.func):  # x.agent(...)(f), x.timer(...)(f)
                pass
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "task" and _registers(node.func):
                pass  # x.task(f)
            else:
                continue
            registered += 1
            fun = node.args[0] if node.args else None
            if not (isinstance(fun, ast.Call) and isinstance(fun.func, ast.Name) and fun.func.id == "guarded"):
                unguarded.append(where)
    assert registered >= 7  # ingest, route, audit, concern, the audit walk and its first run, the direct producer
    assert not unguarded
