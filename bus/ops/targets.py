"""Scrape targets by registration: each sgbus process serving /metrics writes a Prometheus file_sd entry."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from bus.security.files import private_dir, write_private

#: label values a target may carry (bounded: jobs and stages are fixed names, partners and
#: connectors come from the partnership data)
JOBS = ("sgbus-worker", "sgbus-gateway", "sgbus-delivery", "sgbus-connector", "sgbus-monitor")


def targets_dir(home: Path) -> Path:
    return home / "prometheus" / "targets"


_mine: list[Path] = []
_stopping = False


def register(home: Path, job: str, port: int, labels: dict[str, str] | None = None, *,
             scheme: str = "http") -> Path:
    """Announce `127.0.0.1:port` to the stack's Prometheus as `job`. The entry is removed when the
    process exits after `stopping()` (asked to stop); a process that crashes or is killed leaves
    it, so Prometheus sees the target down and SgbusWorkerDown fires, until a process in the same
    role starts and replaces it."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    directory = private_dir(targets_dir(home))
    path = directory / f"{job}-{os.getpid()}.json"
    # The process's own labels first: job and scheme are not theirs to change.
    own = {**(labels or {}), "job": job, "__scheme__": scheme}
    entry = [{"targets": [f"127.0.0.1:{port}"], "labels": own}]
    replaced(directory, own)
    write_private(path, json.dumps(entry))
    if not _mine:
        atexit.register(leave)
    _mine.append(path)
    return path


def _remove_dead(directory: Path, also: Callable[[Path], bool] = lambda _path: True) -> list[Path]:
    """Remove the entries of processes that are gone and for which `also(entry)` holds."""
    removed: list[Path] = []
    for path in directory.glob("*.json"):
        pid = path.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and also(path):
            with contextlib.suppress(OSError):
                path.unlink()
            removed.append(path)
    return removed


def _role(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__scheme__"}


def replaced(directory: Path, labels: dict[str, str]) -> list[Path]:
    """Remove the entries of dead processes in the same role (the same job and labels) as a
    process now starting: it replaces them, so SgbusWorkerDown resolves once a crashed stage is
    back. A dead process in another role keeps its entry (its stage is still down)."""
    def same_role(path: Path) -> bool:
        try:
            return _role(json.loads(path.read_text())[0]["labels"]) == _role(labels)
        except (OSError, ValueError, LookupError, TypeError, AttributeError):
            return False

    return _remove_dead(directory, same_role)


def stopping() -> None:
    """This process was asked to stop (SIGTERM, SIGINT, or its work is done): on exit, leave Prometheus."""
    global _stopping
    _stopping = True


def leave() -> None:
    """Remove this process's entries if it was asked to stop."""
    if _stopping:
        for path in _mine:
            with contextlib.suppress(OSError):
                path.unlink()


def prune(home: Path) -> list[Path]:
    """Remove the entries of processes that died without cleaning up (SIGKILL, crash)."""
    directory = targets_dir(home)
    return _remove_dead(directory) if directory.is_dir() else []
