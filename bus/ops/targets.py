"""Scrape targets by registration: each sgbus process serving /metrics writes a Prometheus file_sd entry."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from pathlib import Path

from bus.security.files import private_dir, write_private

#: label values a target may carry (bounded: jobs and stages are fixed names, partners and
#: connectors come from the partnership data)
JOBS = ("sgbus-worker", "sgbus-gateway", "sgbus-delivery", "sgbus-connector", "sgbus-monitor")


def targets_dir(home: Path) -> Path:
    return home / "prometheus" / "targets"


def register(home: Path, job: str, port: int, labels: dict[str, str] | None = None) -> Path:
    """Announce `127.0.0.1:port` to the stack's Prometheus as `job` until this process exits."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    directory = private_dir(targets_dir(home))
    path = directory / f"{job}-{os.getpid()}.json"
    entry = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": job, "pid": str(os.getpid()), **(labels or {})}}]
    write_private(path, json.dumps(entry))
    atexit.register(_remove, path)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def prune(home: Path) -> list[Path]:
    """Remove the entries of processes that died without cleaning up (SIGKILL, crash)."""
    removed: list[Path] = []
    directory = targets_dir(home)
    if not directory.is_dir():
        return removed
    for path in directory.glob("*.json"):
        pid = path.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(path)
            removed.append(path)
    return removed
