"""Convert and publish files as they arrive in a directory, signed as the source organisation,
each event once (connectors/ledger.py)."""

from __future__ import annotations

import hashlib
import json
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
    #: oversized files already reported (device, inode, size, mtime): reported once, not every round
    oversized: set[tuple[int, int, int, int]] = field(default_factory=set, repr=False)


#: a partner's file is a few MiB; anything far bigger is refused before it is read
MAX_FILE_BYTES = 256 * 2**20


def _ready(path: Path, now: float) -> bool:
    """A regular file (never a symlink: it could point at another organisation's drop), not
    hidden, not partial, and still for SETTLE_S."""
    try:
        return (not path.is_symlink() and path.is_file() and not path.name.startswith(".")
                and not path.name.endswith(_PARTIAL) and now - path.stat().st_mtime >= SETTLE_S)
    except OSError:  # removed while we looked
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _record(event: dict[str, Any]) -> tuple[str, bytes, bytes]:
    parsed = parse_event_dict(event)
    return ingress_topic(parsed.source.agency), parsed.partition_key(), json.dumps(event).encode()


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


def process_file(path: Path, connector: Connector, ctx: Context, ledger: Ledger, sign: Sign, publish: Publish,
                 stats: RunStats, report: Callable[[str], None], name_files: bool = False) -> None:
    try:
        st = path.stat()
        if st.st_size > MAX_FILE_BYTES:
            seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if seen not in stats.oversized:
                stats.oversized.add(seen)
                stats.bad_files += 1
                with path.open("rb") as f:
                    big = hashlib.file_digest(f, "sha256").hexdigest()
                report(f"{file_label(path, big, name_files)}: larger than {MAX_FILE_BYTES // 2**20} MiB; not read")
            return
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # removed or unreadable since it was listed: look again next round
        return
    label = file_label(path, sha, name_files)
    if ledger.file_done(sha):
        return
    stats.files += 1
    converted: list[Converted] = []
    rejected = 0
    try:
        for result in connector.convert(path, ctx):
            if isinstance(result, Rejection):
                rejected += 1
                report(result.describe(label))
            else:
                converted.append(result)
    except (FileRejected, OSError) as exc:
        stats.bad_files += 1
        report(f"{label}: {exc if isinstance(exc, FileRejected) else 'cannot be read'}")
        ledger.file_finished(sha, path.name, 0, 0)  # reported once; a corrected file has another digest
        return
    try:
        changed = hashlib.sha256(path.read_bytes()).hexdigest() != sha
    except OSError:
        changed = True
    if changed:  # written to while we read it: nothing sent, read again next round
        stats.files -= 1
        return
    known = ledger.known(c.event["event_id"] for c in converted)
    fresh = [c.event for c in converted if c.event["event_id"] not in known]
    signed = {e["event_id"]: json.dumps(sign(e)) for e in fresh}
    ledger.stage(sha, signed)
    if signed:
        publish([_record(json.loads(body)) for body in signed.values()])
        ledger.mark_sent(signed)
    ledger.file_finished(sha, path.name, len(converted), rejected)
    stats.published += len(signed)
    stats.already_sent += len(converted) - len(fresh)
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
