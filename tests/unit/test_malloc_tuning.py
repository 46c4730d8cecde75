"""A worker fixes glibc's mmap threshold, for itself and the helper processes it spawns."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.malloc_tuning import ENV, MMAP_THRESHOLD, fix_mmap_threshold

#: a 1 MiB block freed, then another: is the second one mapped (returned when freed) or in the heap?
_SECOND_BLOCK_MAPPED = textwrap.dedent("""
    import ctypes, sys
    if sys.argv[1] == "fixed":
        from bus.malloc_tuning import fix_mmap_threshold
        assert fix_mmap_threshold({})
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = Mallinfo2
    libc.free(libc.malloc(1 << 20))
    before = libc.mallinfo2().hblks  # blocks served by a mapping of their own
    block = libc.malloc(1 << 20)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
""")


def _mapped(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}  # no MALLOC_* tunables
    done = subprocess.run([sys.executable, "-c", _SECOND_BLOCK_MAPPED, mode], capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    return int(done.stdout.strip())


def test_the_operator_s_threshold_is_left_as_set() -> None:
    environ = {ENV: "1048576"}
    assert fix_mmap_threshold(environ) is False
    assert environ == {ENV: "1048576"}


def test_processes_a_worker_starts_inherit_the_threshold() -> None:
    environ: dict[str, str] = {}
    fix_mmap_threshold(environ)
    assert environ[ENV] == str(MMAP_THRESHOLD)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")
def test_a_large_block_freed_does_not_send_the_next_one_to_the_heap() -> None:
    assert _mapped("default") == 0  # the check can fail: glibc's threshold rose past 1 MiB at the first free
    assert _mapped("fixed") == 1
