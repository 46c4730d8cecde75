"""A worker caps glibc's malloc arenas, for itself and the helper processes it spawns."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.malloc_arenas import ARENAS, limit_arenas

#: eight threads allocating at once, then the C library's own count of its arenas
_ALLOCATING_THREADS = textwrap.dedent("""
    import ctypes, sys, threading
    if sys.argv[1] == "cap":
        from bus.malloc_arenas import limit_arenas
        assert limit_arenas({})
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    together = threading.Barrier(8)
    def allocate():
        together.wait()
        for _ in range(2000):
            libc.free(libc.malloc(100_000))
    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc.malloc_stats()  # to stderr: one "Arena n:" line per arena
""")


def _arenas(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}  # no MALLOC_ARENA_MAX
    done = subprocess.run([sys.executable, "-c", _ALLOCATING_THREADS, mode], capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_the_operator_s_malloc_arena_max_is_left_as_set() -> None:
    environ = {"MALLOC_ARENA_MAX": "8"}
    assert limit_arenas(environ) is False
    assert environ == {"MALLOC_ARENA_MAX": "8"}


def test_processes_a_worker_starts_inherit_the_cap() -> None:
    environ: dict[str, str] = {}
    limit_arenas(environ)
    assert environ["MALLOC_ARENA_MAX"] == str(ARENAS)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="arenas are glibc's")
def test_threads_allocating_at_once_share_the_capped_arenas() -> None:
    assert _arenas("default") > ARENAS  # the check can fail: uncapped, each thread gets its own
    assert _arenas("cap") == ARENAS
