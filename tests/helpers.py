"""Shared test helpers: synthetic events and small waits on conditions (never fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.2,
             what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def ingest_children(worker_pid: int) -> list[int]:
    """A worker's ingest process(es) (SGBUS_INGEST_PROCESS)."""
    return helper_children(worker_pid, "sgbus-ingest")


def helper_children(worker_pid: int, name: str) -> list[int]:
    """A worker's helper processes (bus/helper_process.py) of one kind, by the name each takes."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            comm = (entry / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == worker_pid and comm == name:
            found.append(int(entry.name))
    return found


def pseudonymised(event: Any, keyring: Any, override_role: str | None = None) -> Any:
    """pseudonymise_at_ingest as ingest calls it, with a fresh ingest id and a stand-in
    provenance (signature checks have their own tests)."""
    import uuid

    from bus.pseudonymise.engine import pseudonymise_at_ingest
    from bus.records import Provenance

    return pseudonymise_at_ingest(event, keyring, ingest_id=uuid.uuid4(), override_role=override_role,
                                  provenance=Provenance(kid="test", content_sha256="test", signature="test"))
