"""Private files: everything sgbus writes under $SGBUS_HOME is 0600 in 0700 directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def restrict_umask() -> int:
    """Make every file this process (and the Kafka/OPA/worker processes it starts) creates
    private, whatever umask the caller had; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents 0700 (mkdir's mode alone would leave the parents
    to the umask); an existing `path` is narrowed to 0700."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write atomically (temp file + rename) with mode 0600 from the first byte on."""
    private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    return path


def loose_modes(root: Path) -> list[str]:
    """Paths under `root` that others could read (files not 0600, directories not 0700)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath) / name if name else Path(dirpath)
            try:
                st = path.lstat()
            except FileNotFoundError:  # a file removed while we walk (a Kafka segment, a lock)
                continue
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) & ~want:
                found.append(f"{oct(stat.S_IMODE(st.st_mode))} {path}")
    return sorted(set(found))
