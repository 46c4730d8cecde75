"""A worker's helper process (ingest's CPU work, the audit store's appends): one child started by
spawn, one task at a time, named in `ps -e` and `top`, deaf to the signals sent to its worker's
process group, gone when its worker is gone, and started again after it stopped."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from bus import logs
from bus.exceptions import SgbusError

T = TypeVar("T")
log = logs.get("sgbus.worker")


class HelperStopped(SgbusError):
    """A helper process stopped (killed, out of memory): its task is held and run again in a new one.
    `set_up_failed`: it is running, but could not set itself up (what it needs is out of reach)."""

    set_up_failed = False


class HelperClosed(SgbusError):
    """The worker is stopping and has closed its helper: no task is taken (nor retried)."""


def become_helper(name: str, parent: int) -> None:
    """In the child, first: take `name` (the kernel's short name, as `ps -e` and `top` show it;
    its command line still reads `... spawn_main ...`), ignore the process group's signals,
    and watch for the worker's end."""
    # A ^C, a hang-up or a stop sent to the whole process group (a terminal, systemd) must not
    # end this process under a worker still finishing its batches: the worker ends it (at its
    # exit, or by the watch below if it was killed outright).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        Path("/proc/self/comm").write_text(name[:15])
    except OSError:  # not Linux: only the name is lost
        pass
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    # A worker killed outright (SIGKILL, OOM) cannot stop this process: leave when it is gone.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


class HelperSetUpFailed(SgbusError):
    """In the child: its set-up failed (a store out of reach, a key unreadable); tried again at the next task."""


class HelperTaskFailed(SgbusError):
    """In the child: a task raised an error that cannot travel back to the worker whole (only its type does)."""


class HelperTaskError(SgbusError):
    """In the child: a task raised an error that is not sgbus's own (a bug, or a library's), named
    by its type only: its message may quote what the task was handed (a child's details), and
    it reaches the worker's log when the worker stops on it. Raised on, like the error it names."""


def describe(exc: BaseException) -> str:
    """An error, safe to log: sgbus's own errors never carry identifiers or secrets; a driver's
    message might (a DSN, a host), so of those only the type."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, SgbusError) else type(exc).__name__


# In the child: how to set it up, and whether that has succeeded yet.
_setup: tuple[Callable[..., None], tuple[Any, ...]] | None = None
_set_up = False


def _start(name: str, parent: int, setup: Callable[..., None], setup_args: tuple[Any, ...]) -> None:
    global _setup
    become_helper(name, parent)
    _setup = (setup, setup_args)
    try:
        _ensure_set_up()
    except Exception:  # noqa: S110 - tried again, and reported to the worker, by the first task (_call)
        pass


def _ensure_set_up() -> None:
    global _set_up
    if not _set_up and _setup is not None:
        _setup[0](*_setup[1])
        _set_up = True


def _call(fn: Callable[..., T], *args: Any) -> T:
    # A set-up that failed is tried again here, and its cause reported: the pool would otherwise
    # only break, again and again, with the cause left in the child's stderr.
    try:
        _ensure_set_up()
    except Exception as exc:
        raise HelperSetUpFailed(describe(exc)) from None
    try:
        return fn(*args)
    except Exception as exc:
        try:  # an error the worker cannot unpickle would break the pool (read as "stopped", retried forever)
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
        except Exception:
            raise HelperTaskFailed(describe(exc)) from None
        if isinstance(exc, SgbusError):  # ours: its message never carries identifiers or text
            raise
        raise HelperTaskError(describe(exc)) from None


#: bytes each of a helper's pipes holds (at most Linux's pipe-max-size). 512 KiB did as well as
#: 1 MiB (alternating bursts, session 24) and takes half as much of the per-user pipe budget
#: (pipe-user-pages-soft, 64 MiB by default for all of one uid's pipes on the host).
PIPE_BYTES = 512 * 1024


def enlarge_pipes(pool: ProcessPoolExecutor, size: int = PIPE_BYTES) -> int:
    """Let the pool's two pipes (tasks to the child, results back) hold a whole batch: returns
    the size set, 0 where the system cannot (not Linux, or a lower limit is refused).

    Why: a batch (~400 KB of records out, ~600 KB of prepared events back) crossed Linux's
    default 64 KiB pipe in ~10 chunks, and each chunk waited for the worker's thread that reads
    or writes it to take the interpreter lock back from the busy event loop (up to the 5 ms
    switch interval each): a batch's hand-over took ~20-30 ms each way. With larger pipes, one
    or two writes and reads: alternating one-worker bursts of 20,000 events, 1,569 -> 1,634
    events/s (3 pairs, each higher; docs/BENCHMARKS.md session 24)."""
    try:
        import fcntl

        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        size = min(size, limit)
        queues: Any = pool
        for conn in (queues._call_queue._writer, queues._result_queue._reader):
            fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, OSError, AttributeError, ValueError):
        return 0  # the default pipes work, only slower; one enlarged and not the other is harmless
    return size


class HelperProcess:
    """One child process named `name`, set up by `setup(*setup_args)` (tried again before each task
    until it succeeds), then running the tasks it is given."""

    def __init__(self, name: str, setup: Callable[..., None], setup_args: tuple[Any, ...],
                 stopped: type[HelperStopped], what: str) -> None:
        self._initargs = (name, os.getpid(), setup, setup_args)
        self._stopped = stopped
        self._what = what
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        if self._pool is None:
            # spawn, not fork: the worker has threads (Kafka, metrics) by now.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=self._initargs)
            if not enlarge_pipes(self._pool):
                log.debug("helper_pipes_not_enlarged", helper=self._what)
            self._pool.submit(int)  # start it now, not on the first task

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the child. `stopped` if the child stopped (another starts on the next
        call) or could not set itself up (tried again on the next call), with the cause; the
        caller holds its task and retries. HelperClosed once closed. sgbus's own errors `fn` raises,
        as raised; any other as HelperTaskError naming its type (HelperTaskFailed if it cannot be
        sent back)."""
        if self._closed:
            raise HelperClosed(f"the worker is stopping: {self._what} is closed")
        self.start()
        pool = self._pool
        assert pool is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _call, fn, *args)
        except HelperSetUpFailed as exc:
            stopped = self._stopped(f"{self._what} could not set itself up ({exc}); trying again")
            stopped.set_up_failed = True
            raise stopped from None
        except BrokenProcessPool:
            if self._pool is pool:  # not one started since by a task that failed first
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise self._stopped(f"{self._what} stopped; starting another") from None

    def close(self) -> None:
        """Stop the process (at the worker's exit) and start no other."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
