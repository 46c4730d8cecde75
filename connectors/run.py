"""Convert and publish files as they arrive in a directory, signed as the source organisation,
each event once (connectors/ledger.py)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.topics import ingress_topic
from connectors.base import Connector, Context, Converted, FileRejected, Rejection
from connectors.ledger import Ledger
from schemas.registry import parse_event_dict

#: what publishing takes: (topic, key, value) records -> how many the broker acknowledged
Publish = Callable[[list[tuple[str, bytes, bytes]]], int]
Sign = Callable[[dict[str, Any]], dict[str, Any]]
#: files still being written are left until they have been still for this long
SETTLE_S = 1.0
_PARTIAL = (".tmp", ".part", ".partial", ".swp", "~")


@dataclass
class RunStats:
    files: int = 0
    published: int = 0
    already_sent: int = 0
    rejected: int = 0
    bad_files: int = 0
    problems: list[str] = field(default_factory=list)
    #: files not read, already reported (device, inode, size, mtime): reported once, not every round
    oversized: set[tuple[int, int, int, int]] = field(default_factory=set, repr=False)
    #: digests of files that could not be copied for reading, already reported
    not_copied: set[str] = field(default_factory=set, repr=False)


#: a partner's file is a few MiB; anything far bigger is refused before it is read
MAX_FILE_BYTES = 256 * 2**20


def _ready(path: Path, now: float) -> bool:
    """Not hidden, not partial, not a directory, and still for SETTLE_S. A symbolic link (or
    anything else that is not a regular file) is taken too, to be reported, never read."""
    try:
        st = path.lstat()
        return (not stat.S_ISDIR(st.st_mode) and not path.name.startswith(".")
                and not path.name.endswith(_PARTIAL) and now - st.st_mtime >= SETTLE_S)
    except OSError:  # removed while we looked
        return False


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _record(event: dict[str, Any]) -> tuple[str, bytes, bytes]:
    parsed = parse_event_dict(event)
    return ingress_topic(parsed.source.agency), parsed.partition_key(), json.dumps(event).encode()


def content_digest(event: dict[str, Any]) -> str:
    """What an event says, not when it was converted: a file delivered again converts to the same
    digest (recorded_at is the time of conversion)."""
    stable = {k: v for k, v in event.items() if k != "recorded_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def resend_pending(ledger: Ledger, publish: Publish) -> int:
    """Events staged before a crash go out as the very bytes staged (the bus takes them as a replay)."""
    pending = ledger.pending()
    if not pending:
        return 0
    publish([_record(json.loads(body)) for _, body in pending])
    ledger.mark_sent(eid for eid, _ in pending)
    return len(pending)


def file_label(path: Path, sha: str, name_files: bool) -> str:
    """How a report names a dropped file: by its digest unless the operator asked for names.

    The partner's system names the files, and a name can be a child's ("smith-john.json"); the
    digest finds the file (`sha256sum DIR/* | grep ^DIGEST`) and is what the ledger keys on."""
    return str(path) if name_files else f"file sha256:{sha[:16]}"


class _NotRead(Exception):
    """A dropped file that is not read, and why (said once)."""


def read_dropped(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read once through one descriptor: never through a symbolic link (one
    swapped in after the directory was listed could point at another organisation's drop or at
    /dev/zero), only a regular file, and never more than MAX_FILE_BYTES (a file that grows
    while read is cut off there and refused). What is converted is these bytes, not the path."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRead("not a regular file; not read")
        if st.st_nlink > 1:  # a hard link can reach a file in another organisation's drop, as a symlink can
            raise _NotRead("has other hard links; not read")
        if st.st_size > MAX_FILE_BYTES:
            raise _NotRead(f"larger than {MAX_FILE_BYTES // 2**20} MiB; not read")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _NotRead(f"larger than {MAX_FILE_BYTES // 2**20} MiB; not read")
        return data, st
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def process_file(path: Path, connector: Connector, ctx: Context, ledger: Ledger, sign: Sign, publish: Publish,
                 stats: RunStats, report: Callable[[str], None], name_files: bool = False) -> None:
    try:
        data, st = read_dropped(path)
    except FileNotFoundError:  # removed since it was listed
        return
    except (_NotRead, OSError) as exc:
        # Said once per file as it is (a file that changes is looked at again); named by inode,
        # as its content was not read.
        try:
            seen = _identity(path.lstat())
        except OSError:
            return
        if seen not in stats.oversized:
            stats.oversized.add(seen)
            stats.bad_files += 1
            why = str(exc) if isinstance(exc, _NotRead) else (
                "a symbolic link; not read" if exc.errno == errno.ELOOP else f"cannot be read ({type(exc).__name__})")
            report(f"{path if name_files else f'file inode {seen[1]}'}: {why}")
        return
    sha = hashlib.sha256(data).hexdigest()
    label = file_label(path, sha, name_files)
    if ledger.file_done(sha):
        return
    stats.files += 1
    converted: list[Converted] = []
    rejected = 0
    with tempfile.TemporaryDirectory(prefix="sgbus-connector-") as private:
        # The connector reads a private copy of exactly the bytes hashed: nothing the partner
        # does to the drop meanwhile changes what is converted. Some connectors tell formats by
        # suffix; only a short, plain one is kept (the partner chose the name).
        suffix = path.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", path.suffix) else ""
        copy = Path(private) / f"dropped{suffix}"
        try:
            copy.write_bytes(data)
        except OSError as exc:  # our side (a full disk): said once, and tried again next round
            stats.files -= 1
            if sha not in stats.not_copied:
                stats.not_copied.add(sha)
                report(f"{label}: could not be copied for reading ({type(exc).__name__}); will try again")
            return
        del data
        try:
            for result in connector.convert(copy, ctx):
                if isinstance(result, Rejection):
                    rejected += 1
                    report(result.describe(label))
                else:
                    converted.append(result)
        except (FileRejected, OSError) as exc:
            stats.bad_files += 1
            report(f"{label}: {exc if isinstance(exc, FileRejected) else 'cannot be read'}")
            ledger.file_finished(sha, 0, 0)  # reported once; a corrected file has another digest
            return
    try:
        changed = _identity(path.stat(follow_symlinks=False)) != _identity(st)
    except OSError:
        changed = True
    if changed:  # still being written (or replaced) while read: nothing sent, read again next round
        stats.files -= 1
        return
    digests = {c.event["event_id"]: content_digest(c.event) for c in converted}
    known = ledger.known(digests)
    fresh, repeated = [], 0
    for c in converted:
        eid = c.event["event_id"]
        if eid not in known:
            fresh.append(c.event)
        elif known[eid] in (None, digests[eid]):
            repeated += 1
        else:  # a record changed after it was sent: the bus would dead-letter it, so never a silent skip
            rejected += 1
            report(f"{label}: {c.where}: $: changed since it was sent under the same event id; a correction "
                   "must come as the source's own amendment (a new record) [changed_after_sent]")
    signed = {e["event_id"]: json.dumps(sign(e)) for e in fresh}
    ledger.stage(sha, signed, {eid: digests[eid] for eid in signed})
    if signed:
        publish([_record(json.loads(body)) for body in signed.values()])
        ledger.mark_sent(signed)
    ledger.file_finished(sha, len(converted), rejected)
    stats.published += len(signed)
    stats.already_sent += repeated
    stats.rejected += rejected


def watch(directory: Path, connector: Connector, ctx: Context, ledger: Ledger, sign: Sign, publish: Publish, *,
          once: bool = False, poll_s: float = 1.0, should_stop: Callable[[], bool] = lambda: False,
          report: Callable[[str], None] = print, stats: RunStats | None = None,
          name_files: bool = False) -> RunStats:
    """Publish every file in `directory` (oldest first), then, unless `once`, each new one.
    Reports name a file by its digest (`file_label`) unless `name_files`."""
    stats = stats if stats is not None else RunStats()
    resend_pending(ledger, publish)
    while not should_stop():
        now = time.time()
        if once:  # files written just now are taken too: the caller says they are complete
            now += SETTLE_S
        for path in sorted((p for p in directory.iterdir() if _ready(p, now)), key=_mtime):
            process_file(path, connector, ctx, ledger, sign, publish, stats, report, name_files)
        if once:
            break
        time.sleep(poll_s)
    return stats
