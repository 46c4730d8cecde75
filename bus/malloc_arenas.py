"""Bound the C library's malloc arenas in a worker and its helper processes (glibc)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import MutableMapping

#: glibc gives each thread that allocates at once an arena of its own, up to 8 per core. A
#: worker's threads (Faust's consumer, the sends, the event id register, the helper pools'
#: feeders) allocate records' bytes that the event loop frees: memory freed into one arena is
#: not reused by another, so on a deep backlog the worker's peak grew. Two arenas: 100,000-event
#: backfills of one all-in-one worker peaked at 186-189 MB against 195-205 MB (docs/BENCHMARKS.md
#: session 25), its ingest process 173-174 against 178-179 MB.
ARENAS = 2
M_ARENA_MAX = -8  # glibc's <malloc.h>


def limit_arenas(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Cap this process at ARENAS arenas and pass the cap on (MALLOC_ARENA_MAX) to the processes
    it starts, unless the operator set MALLOC_ARENA_MAX (glibc read it when this process began).
    True when this process's cap was set here; False elsewhere (no glibc, or the operator's)."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    environ["MALLOC_ARENA_MAX"] = str(ARENAS)  # helper processes are spawned: glibc reads it at their start
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS has no mallopt)
        return False
    return bool(mallopt(M_ARENA_MAX, ARENAS))
