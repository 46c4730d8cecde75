"""Bound the C library's malloc arenas in a worker and its helper processes (glibc)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: glibc gives each thread that allocates at once an arena of its own, up to 8 per core. A
#: worker's threads (Faust's consumer, the sends, the event id register, the helper pools'
#: feeders) allocate records' bytes that the event loop frees: memory freed into one arena is
#: not reused by another, so on a deep backlog the worker's peak grew. 100,000-event backfills of
#: one all-in-one worker, two arenas against glibc's default, 7 alternating pairs: the worker's
#: peak 184-197 MB (mean 189) against 189-205 (mean 198), its ingest process 172-173 against
#: 178-179 MB (that process is the ingest stage's too), events/s -2% (median of the pairs; the
#: noise is larger). docs/BENCHMARKS.md, session 25.
ARENAS = 2
M_ARENA_MAX = -8  # glibc's <malloc.h>


def limit_arenas(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Cap this process at ARENAS arenas and pass the cap on (MALLOC_ARENA_MAX) to the processes
    it starts, unless the operator chose (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in
    GLIBC_TUNABLES: glibc read either when this process began). True when this process's cap was
    set here; False otherwise (the operator's choice, or not glibc)."""
    if "MALLOC_ARENA_MAX" in environ or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", ""):
        return False
    environ["MALLOC_ARENA_MAX"] = str(ARENAS)  # helper processes are spawned: glibc reads it at their start
    try:
        import ctypes  # not in every Python build; the cap is only a saving

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError, TypeError):  # no ctypes, no mallopt (macOS), Windows
        return False
    return bool(mallopt(M_ARENA_MAX, ARENAS))
