"""A worker caps glibc's malloc arenas, for itself and the helper processes it spawns."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.malloc_arenas import ARENAS, limit_arenas

#: eight threads allocating at once, then the C library's own count of its arenas; "cap": the
#: process caps itself first, "child": it caps itself and counts in a process it starts
_ALLOCATING_THREADS = textwrap.dedent("""
    import ctypes, os, subprocess, sys, threading
    if sys.argv[1] in ("cap", "child"):
        from bus.malloc_arenas import limit_arenas
        assert limit_arenas()
    if sys.argv[1] == "child":
        sys.exit(subprocess.run([sys.executable, *sys.argv[:1], "plain"], check=False).returncode)
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


def _arenas(mode: str, tmp_path: Path) -> int:
    script = tmp_path / "allocate.py"
    script.write_text(_ALLOCATING_THREADS)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}  # no MALLOC_ARENA_MAX
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=60,
                          check=True, env=env)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_the_operator_s_choice_of_arenas_is_left_as_set() -> None:
    assert limit_arenas(chosen := {"MALLOC_ARENA_MAX": "8"}) is False
    assert chosen == {"MALLOC_ARENA_MAX": "8"}
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0"}
    assert limit_arenas(tuned) is False
    assert "MALLOC_ARENA_MAX" not in tuned  # glibc would take one or the other: not both


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="arenas are glibc's")
def test_threads_allocating_at_once_share_the_capped_arenas(tmp_path: Path) -> None:
    assert _arenas("plain", tmp_path) > ARENAS  # the check can fail: uncapped, each thread gets its own
    assert _arenas("cap", tmp_path) == ARENAS


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="arenas are glibc's")
def test_a_process_the_worker_starts_inherits_the_cap(tmp_path: Path) -> None:
    """The helper processes are spawned (a new interpreter): the cap reaches them by the environment."""
    assert _arenas("child", tmp_path) == ARENAS
