"""File drop: delivered events as JSON lines, each file written whole and renamed into place,
so a partner's job never reads a half-written file."""

from __future__ import annotations

import os
import time
from pathlib import Path


class FileDropSink:
    def __init__(self, directory: Path, partner: str, max_events_per_file: int = 1000,
                 name: str = "filedrop") -> None:
        self.name = name
        self.directory = directory
        self.partner = partner
        self.max_events = max_events_per_file
        self.buffer: list[bytes] = []
        self.files = 0
        directory.mkdir(parents=True, exist_ok=True)

    def deliver(self, event_id: str, body: bytes) -> None:
        self.buffer.append(body.rstrip(b"\n") + b"\n")
        if len(self.buffer) >= self.max_events:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{self.partner}-{stamp}-{time.monotonic_ns()}.jsonl"
        tmp = self.directory / f".{name}.partial"
        with tmp.open("wb") as fh:
            fh.writelines(self.buffer)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / name)  # atomic within one filesystem
        self.buffer.clear()
        self.files += 1
