"""`sgbus connector run`: each event is published once, whatever happens to the files or the
process; bad records are reported and the rest go through."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connectors import run as connectors_run
from connectors.base import Context
from connectors.inbound import CONNECTORS, connector_settings
from connectors.ledger import Ledger
from connectors.run import watch

REPO = Path(__file__).parents[2]
SAMPLES = REPO / "connectors" / "samples"
NOW = datetime.fromisoformat("2026-11-26T06:00:00+00:00")


class Broker:
    """Stands in for the publish function only (the Kafka side is tested on the real stack)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_next = False

    def __call__(self, records: list[tuple[str, bytes, bytes]]) -> int:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("broker went away")
        self.sent += [json.loads(value) for _, _, value in records]
        return len(records)


def _sign(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "signature": f"sig-{event['event_id']}"}


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    shutil.copy(SAMPLES / "encompass" / "notifications.json", d / "night-1.json")
    return d


def _run(drop: Path, ledger: Ledger, broker: Broker, reports: list[str] | None = None,  # type: ignore[no-untyped-def]
         **kw: Any):
    ctx = Context(org_id="NSP", now=NOW, settings=connector_settings("encompass", REPO / "policies" / "data"))
    return watch(drop, CONNECTORS["encompass"](), ctx, ledger, _sign, broker, once=True,
                 report=(reports.append if reports is not None else lambda _m: None), **kw)


def _digest(path: Path) -> str:
    return "file sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_good_records_are_published_and_the_bad_one_is_reported_without_its_values(drop: Path, tmp_path: Path) -> None:
    broker, reports = Broker(), []
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker, reports)
    assert (stats.published, stats.rejected) == (2, 1)
    assert [e["payload"]["school_urn"] for e in broker.sent] == ["900001", "900002"]
    assert all(e["signature"].startswith("sig-") for e in broker.sent)
    assert reports == [f"{_digest(drop / 'night-1.json')}: record 3: data.attributes.riskGrade: not one of the "
                       "codes in the mapping table (3 codes) [unknown_code]"]


def test_a_file_named_after_a_child_is_reported_by_its_digest_not_its_name(drop: Path, tmp_path: Path) -> None:
    (drop / "night-1.json").rename(drop / "kayden-testbury-2017-02-14.json")  # a partner's system chose this
    (drop / "ava-sample-notes.json").write_text("<xml/>")
    reports: list[str] = []
    _run(drop, Ledger(tmp_path / "l.sqlite"), Broker(), reports)
    assert len(reports) == 2
    assert not [r for r in reports if "testbury" in r.lower() or "ava" in r.lower() or str(drop) in r]
    assert f"{_digest(drop / 'ava-sample-notes.json')}: not JSON" in reports


def test_the_operator_can_ask_for_file_names(drop: Path, tmp_path: Path) -> None:
    reports: list[str] = []
    _run(drop, Ledger(tmp_path / "l.sqlite"), Broker(), reports, name_files=True)
    assert reports == [f"{drop / 'night-1.json'}: record 3: data.attributes.riskGrade: not one of the codes in "
                       "the mapping table (3 codes) [unknown_code]"]


def test_an_oversized_file_is_reported_once_not_every_round(drop: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.run

    limit = (drop / "night-1.json").stat().st_size
    monkeypatch.setattr(connectors.run, "MAX_FILE_BYTES", limit)
    big = drop / "huge.json"
    big.write_text("[" + " " * limit + "]")
    broker, reports, ledger = Broker(), [], Ledger(tmp_path / "l.sqlite")
    stats = connectors.run.RunStats()
    for _ in range(3):  # three looks at the directory, as a long-running connector makes
        _run(drop, ledger, broker, reports, stats=stats)
    oversized = [r for r in reports if "larger than" in r]
    assert oversized == [f"file inode {big.stat().st_ino}: larger than 0 MiB; not read"]  # not read: no digest
    assert stats.bad_files == 1


def test_a_symlink_swapped_in_after_the_listing_is_reported_and_never_followed(
        drop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.run

    other = tmp_path / "other-org"  # another organisation's drop, which this org's connector can read
    other.mkdir()
    shutil.copy(drop / "night-1.json", other / "theirs.json")
    (drop / "night-1.json").unlink()
    (drop / "mine.json").write_text("{}")
    ready = connectors.run._ready

    def swap_after_check(p: Path, now: float) -> bool:
        ok = ready(p, now)
        if ok and p.name == "mine.json":  # the partner renames a link over its file just after
            p.unlink()
            p.symlink_to(other / "theirs.json")
        return ok

    monkeypatch.setattr(connectors.run, "_ready", swap_after_check)
    broker, reports = Broker(), []
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker, reports)
    assert broker.sent == []
    assert reports == [f"file inode {(drop / 'mine.json').lstat().st_ino}: a symbolic link; not read"]
    assert stats.bad_files == 1


def test_a_fifo_in_the_drop_is_reported_once_and_never_blocks_the_connector(drop: Path, tmp_path: Path) -> None:
    os.mkfifo(drop / "pipe.json")
    broker, reports, ledger, stats = Broker(), [], Ledger(tmp_path / "l.sqlite"), connectors_run.RunStats()
    for _ in range(2):
        _run(drop, ledger, broker, reports, stats=stats)
    assert [r for r in reports if "regular" in r] == [
        f"file inode {(drop / 'pipe.json').lstat().st_ino}: not a regular file; not read"]
    assert len(broker.sent) == 2  # the real file went through


def test_the_ledger_keeps_no_file_name(drop: Path, tmp_path: Path) -> None:
    (drop / "night-1.json").rename(drop / "testbury-kayden.json")
    ledger = Ledger(tmp_path / "l.sqlite")
    _run(drop, ledger, Broker())
    assert [r for r in ledger._db.execute("SELECT name FROM files")] == [("",)]


def test_a_restart_or_a_redelivered_file_sends_nothing_twice(drop: Path, tmp_path: Path) -> None:
    broker = Broker()
    _run(drop, Ledger(tmp_path / "l.sqlite"), broker)
    shutil.copy(drop / "night-1.json", drop / "night-1-again.json")  # the same file delivered twice
    edited = json.loads((drop / "night-1.json").read_text())
    (drop / "night-1-reformatted.json").write_text(json.dumps(edited, indent=4))  # same records, other bytes
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker)  # a new process, the same ledger
    assert len(broker.sent) == 2
    assert (stats.published, stats.already_sent) == (0, 2)


def test_events_staged_before_a_crash_go_out_again_as_the_same_bytes(drop: Path, tmp_path: Path) -> None:
    broker = Broker()
    broker.fail_next = True
    with pytest.raises(RuntimeError):
        _run(drop, Ledger(tmp_path / "l.sqlite"), broker)
    assert broker.sent == []
    ledger = Ledger(tmp_path / "l.sqlite")
    staged = {eid: json.loads(body) for eid, body in ledger.pending()}
    assert len(staged) == 2
    _run(drop, ledger, broker)
    assert broker.sent == list(staged.values())  # identical signed events: the bus sees a replay, not a clash
    assert ledger.pending() == []
    (row,) = ledger._db.execute("SELECT COUNT(*) FROM events WHERE signed IS NOT NULL")
    assert row == (0,)  # once sent, no copy of the event (identifiers) stays in the ledger


def test_a_file_still_being_written_waits(drop: Path, tmp_path: Path) -> None:
    (drop / "night-2.json.part").write_text("{")
    broker, reports = Broker(), []
    _run(drop, Ledger(tmp_path / "l.sqlite"), broker, reports)
    assert not [r for r in reports if "night-2" in r]


def test_an_unreadable_file_is_one_clear_error(drop: Path, tmp_path: Path) -> None:
    (drop / "junk.json").write_text("<xml/>")
    broker, reports = Broker(), []
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker, reports)
    assert stats.bad_files == 1
    assert f"{_digest(drop / 'junk.json')}: not JSON" in reports


def test_a_record_changed_after_it_was_sent_is_reported_not_counted_as_already_sent(drop: Path,
                                                                                    tmp_path: Path) -> None:
    broker, ledger = Broker(), Ledger(tmp_path / "l.sqlite")
    _run(drop, ledger, broker)
    corrected = json.loads((drop / "night-1.json").read_text())
    corrected[0]["included"][1]["attributes"]["schoolUrn"] = "900002"  # the same child and incident, another school
    (drop / "night-1-corrected.json").write_text(json.dumps(corrected))
    reports: list[str] = []
    stats = _run(drop, ledger, broker, reports)
    assert (stats.published, stats.already_sent) == (0, 1)
    assert [r for r in reports if "[changed_after_sent]" in r] == [
        f"{_digest(drop / 'night-1-corrected.json')}: record 1: $: changed since it was sent under the same event "
        "id; a correction must come as the source's own amendment (a new record) [changed_after_sent]"]
    assert len(broker.sent) == 2  # nothing sent again


def test_a_ledger_from_before_content_digests_still_knows_what_it_sent(drop: Path, tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "l.sqlite")
    old.executescript("""
        CREATE TABLE events (event_id TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, signed TEXT, sent_at TEXT);
        CREATE TABLE files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, events INTEGER NOT NULL,
                            rejected INTEGER NOT NULL, done_at TEXT NOT NULL);""")
    old.close()
    broker = Broker()
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker)
    assert stats.published == 2


def test_a_long_odd_file_name_never_stops_the_connector(drop: Path, tmp_path: Path) -> None:
    shutil.copy(drop / "night-1.json", drop / ("a." + "x" * 253))  # a legal name, whose suffix is 254 bytes
    (drop / "night-1.json").unlink()
    broker = Broker()
    stats = _run(drop, Ledger(tmp_path / "l.sqlite"), broker)
    assert stats.published == 2


def test_a_hard_link_into_the_drop_is_reported_and_not_read(drop: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-org"
    other.mkdir()
    (drop / "night-1.json").rename(other / "theirs.json")
    os.link(other / "theirs.json", drop / "mine.json")
    broker, reports = Broker(), []
    _run(drop, Ledger(tmp_path / "l.sqlite"), broker, reports)
    assert broker.sent == []
    assert reports == [f"file inode {(drop / 'mine.json').stat().st_ino}: has other hard links; not read"]


def test_a_file_that_cannot_be_copied_for_reading_is_said_once_and_tried_again(drop: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write = Path.write_bytes
    full = {"disk": True}

    def write_bytes(self: Path, data: bytes) -> int:
        if full["disk"] and self.name.startswith("dropped"):
            raise OSError(28, "No space left on device")
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    broker, reports, ledger, stats = Broker(), [], Ledger(tmp_path / "l.sqlite"), connectors_run.RunStats()
    for _ in range(2):
        _run(drop, ledger, broker, reports, stats=stats)
    assert reports == [f"{_digest(drop / 'night-1.json')}: could not be copied for reading (OSError); will try again"]
    full["disk"] = False
    _run(drop, ledger, broker, reports, stats=stats)
    assert len(broker.sent) == 2


def test_file_names_a_ledger_kept_before_are_wiped_from_its_bytes(drop: Path, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger._db.execute("INSERT INTO files VALUES ('abc', 'testbury-kayden.json', 1, 0, 'then')")
    ledger.close()
    Ledger(tmp_path / "l.sqlite").close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("l.sqlite*"))
    assert b"testbury" not in on_disk
