"""Large short-lived buffers of a worker and its helper processes go back to the system when freed (glibc)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import MutableMapping

#: glibc serves a block of at least this many bytes by a mapping of its own, returned to the
#: system when freed. Its default starts at 128 KiB but rises to the size of every mapped block
#: freed (up to 32 MiB): after the first fetch response or batch hand-back (~1 MiB) is freed,
#: later ones come from the heap, where they fragment it and its peak stays. Fixed at 128 KiB (a
#: fixed threshold does not rise): 200,000-event backfills of one all-in-one worker peaked at
#: 188 / 193 MB against 203 / 201 MB, its ingest process at 168 against 179 MB, at the same
#: events/s (docs/BENCHMARKS.md, session 27).
MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's tunable, read when a process starts


def fix_mmap_threshold(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Fix this process's mmap threshold at MMAP_THRESHOLD and pass it on (MALLOC_MMAP_THRESHOLD_)
    to the processes it starts, unless the operator set MALLOC_MMAP_THRESHOLD_ (glibc read it when
    this process began). True when this process's threshold was set here."""
    if ENV in environ:
        return False
    environ[ENV] = str(MMAP_THRESHOLD)  # helper processes are spawned: glibc reads it at their start
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
