"""Private files: everything sgbus writes under $SGBUS_HOME is 0600 in 0700 directories."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077


def restrict_umask() -> int:
    """Make every file this process (and the Kafka/OPA/worker processes it starts) creates
    private, whatever umask the caller had; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def untrusted_home(path: Path) -> str | None:
    """Why `path` (an existing $SGBUS_HOME) is not to be trusted, or None: another user could
    have put a keyring, credentials or a key register there for sgbus to use. Refused: owned by
    another user; writable by every user, unless root owns it without the sticky bit (a
    container's volume: Kubernetes makes an emptyDir 0777, and no other user runs in the pod;
    /tmp, root's but shared by every user of a host, has the sticky bit)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None  # made by sgbus itself, 0700, on first use
    if st.st_uid not in (os.getuid(), 0):
        return f"owned by another user (uid {st.st_uid})"
    if st.st_mode & stat.S_IWOTH and (st.st_uid != 0 or st.st_mode & stat.S_ISVTX):
        return "writable by every user"
    return None


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
    """Write atomically (a new temp file + rename) with mode 0600 from the first byte on. A
    missing parent is made 0700; an existing one is left as it is (an `--out` into /tmp must not
    narrow /tmp, nor strip its sticky bit). The temp file is made new (O_EXCL, a random name),
    never opened through whatever another user left at a fixed name."""
    if not path.parent.exists():
        private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
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


def handover_dir(path: Path) -> Path:
    """A directory to leave a private key in for someone to collect: made 0700 if missing; an
    existing one must be this user's own and closed to others (a shared directory such as /tmp
    would let another user swap or read what is written there)."""
    if not path.exists():
        return private_dir(path)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        from bus.exceptions import SgbusError

        raise SgbusError(f"{path}: give a new directory, or one of your own that only you can write to")
    return path
