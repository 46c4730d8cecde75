"""A partner's mailbox: its `sg.deliver.<partner>` topic read through a per-partner consumer
group, with an opaque cursor (the next offset of each partition) and acknowledgement by
committing that cursor. No second copy of the data: until acknowledged, the same deliveries
come back (MESH's "download until acknowledged")."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bus import logs
from bus.security.kafka_access import KafkaAccess
from bus.topics import deliver_topic

log = logs.get("sgbus.gateway.mailbox")
CURSOR_VERSION = "c1"
#: how long one read may take to reach the end of the partner's topic
READ_BUDGET_S = 5.0


class BadCursor(ValueError):
    """The cursor is malformed, from another mailbox, or points past the end of this one."""


class MailboxBusy(RuntimeError):
    """Another read or acknowledgement of this mailbox is in progress (one at a time each)."""


class MailboxUnavailable(RuntimeError):
    """The partner's topic cannot be found (not created yet, or being recreated)."""


#: how long the partitions of a partner's topic are remembered
PARTITIONS_TTL_S = 60.0


def mailbox_group(partner_id: str) -> str:
    return f"gateway.{partner_id}.mailbox"


def _mailbox_tag(partner_id: str) -> str:
    return hashlib.sha256(f"sgbus mailbox {partner_id}".encode()).hexdigest()[:12]


def encode_cursor(partner_id: str, positions: dict[int, int]) -> str:
    body = json.dumps({"m": _mailbox_tag(partner_id), "p": sorted(positions.items())}, separators=(",", ":"))
    return f"{CURSOR_VERSION}.{base64.urlsafe_b64encode(body.encode()).decode().rstrip('=')}"


def decode_cursor(partner_id: str, cursor: str) -> dict[int, int]:
    """Positions (partition -> next offset) from a cursor this mailbox gave out."""
    version, _, body = cursor.partition(".")
    try:
        if version != CURSOR_VERSION or len(cursor) > 2048:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if data["m"] != _mailbox_tag(partner_id):
            raise BadCursor("the cursor belongs to another mailbox")
        positions = {int(p): int(o) for p, o in data["p"]}
    except BadCursor:
        raise
    except (ValueError, KeyError, TypeError):
        raise BadCursor("the cursor is malformed") from None
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise BadCursor("the cursor is malformed")
    return positions


@dataclass(frozen=True)
class Delivery:
    partition: int
    offset: int
    delivered_at: datetime
    event: dict[str, Any]


class Mailbox:
    """One partner's mailbox. Thread-safe; every call blocks (run it off the event loop)."""

    def __init__(self, access: KafkaAccess, partner_id: str) -> None:
        self.partner_id = partner_id
        self.topic = deliver_topic(partner_id)
        self._lock = threading.Lock()
        self._consumer = Consumer(access.librdkafka(**{
            "group.id": mailbox_group(partner_id), "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "log_level": 3,
            # an empty partition answers (end of partition) after this, not Kafka's default 500 ms
            "fetch.wait.max.ms": 50,
        }))
        self._partitions: tuple[float, list[int]] | None = None

    def _tps(self) -> list[TopicPartition]:
        if self._partitions is None or time.monotonic() - self._partitions[0] > PARTITIONS_TTL_S:
            md = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if md is None or md.error is not None:
                raise MailboxUnavailable("the partner's delivery topic does not exist")
            self._partitions = (time.monotonic(), sorted(md.partitions))
        return [TopicPartition(self.topic, p) for p in self._partitions[1]]

    def _acquire(self) -> None:
        # One call at a time per mailbox, and a second one is told so at once rather than queued:
        # a partner cannot tie up the gateway's threads waiting on its own mailbox.
        if not self._lock.acquire(blocking=False):
            raise MailboxBusy("another call on this mailbox is in progress")

    def _bounds(self) -> dict[int, tuple[int, int]]:
        """(low, high) watermark of each partition, read once per call."""
        out = {}
        for tp in self._tps():
            low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            out[tp.partition] = (int(low), int(high))
        return out

    def _committed(self, bounds: dict[int, tuple[int, int]]) -> dict[int, int]:
        out = {}
        for tp in self._consumer.committed(self._tps(), timeout=10):
            low, high = bounds[tp.partition]
            # none yet, or past the end (the topic was recreated): from the oldest kept
            out[tp.partition] = tp.offset if 0 <= tp.offset <= high else low
        return out

    @staticmethod
    def _check(positions: dict[int, int], bounds: dict[int, tuple[int, int]]) -> dict[int, int]:
        if set(positions) - set(bounds):
            raise BadCursor("the cursor names partitions this mailbox does not have")
        if any(offset > bounds[partition][1] for partition, offset in positions.items()):
            raise BadCursor("the cursor points past the end of the mailbox")
        return positions

    def read(self, after: str | None, limit: int, wait_s: float = 0.0) -> tuple[list[Delivery], str, bool]:
        """Up to `limit` deliveries after `after` (default: after what was acknowledged), the
        cursor past them, and whether more were waiting. In order within each partition (so
        per child: one child's deliveries share a partition) and by delivery time across them."""
        self._acquire()
        try:
            bounds = self._bounds()
            start = self._committed(bounds)
            if after is not None:
                start.update(self._check(decode_cursor(self.partner_id, after), bounds))
            pending = self._fetch(start, {p: high for p, (_low, high) in bounds.items()}, limit, wait_s)
            picked, positions = _merge(pending, start, limit)
            more = sum(len(v) for v in pending.values()) > len(picked)
            return picked, encode_cursor(self.partner_id, positions), more
        finally:
            self._lock.release()

    def _fetch(self, start: dict[int, int], ends: dict[int, int], limit: int, wait_s: float,
               ) -> dict[int, list[Delivery]]:
        """Up to `limit` + 1 deliveries from each partition (a partition is paused when it has
        them): the same start gives the same page, whatever order the fetches come back in."""
        pending: dict[int, list[Delivery]] = {p: [] for p in start}
        # nothing past the high watermark: known without a fetch (an empty mailbox answers at once)
        done = {p for p, o in start.items() if o >= ends[p]}
        if len(done) == len(start) and wait_s <= 0:
            return pending
        self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
        self._consumer.resume([TopicPartition(self.topic, p) for p in start])  # paused by the last read
        now = time.monotonic()
        give_up, wait_until = now + READ_BUDGET_S + wait_s, now + wait_s
        while time.monotonic() < give_up:
            if len(done) == len(start) and (any(pending.values()) or time.monotonic() >= wait_until):
                break
            msg = self._consumer.poll(0.1)
            if msg is None:
                continue
            error, partition, offset = msg.error(), int(msg.partition() or 0), int(msg.offset() or 0)
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(partition)
                continue
            if len(pending[partition]) > limit:
                continue  # fetched before the pause took effect; the next page reads it again
            done.discard(partition)
            try:
                event = json.loads(msg.value() or b"")
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                log.warning("mailbox_undecodable_record", partition=partition)
                continue
            _kind, ts = msg.timestamp()
            pending[partition].append(Delivery(partition, offset, datetime.fromtimestamp(ts / 1000, UTC), event))
            if len(pending[partition]) > limit:
                self._consumer.pause([TopicPartition(self.topic, partition)])
                done.add(partition)
        return pending

    def ack(self, cursor: str) -> bool:
        """Commit the cursor's positions (forward only: an old cursor never brings back what a
        later one acknowledged). True if anything new was acknowledged."""
        self._acquire()
        try:
            bounds = self._bounds()
            positions = self._check(decode_cursor(self.partner_id, cursor), bounds)
            committed = self._committed(bounds)
            forward = {p: o for p, o in positions.items() if o > committed.get(p, 0)}
            if forward:
                self._consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in forward.items()],
                                      asynchronous=False)
            return bool(forward)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._consumer.close()


def _merge(pending: dict[int, list[Delivery]], start: dict[int, int], limit: int,
           ) -> tuple[list[Delivery], dict[int, int]]:
    """Take the earliest deliveries across partitions, each partition's in offset order, so the
    cursor can say "everything before offset o of partition p" for every partition."""
    heads = {p: 0 for p in pending}
    picked: list[Delivery] = []
    positions = dict(start)
    while len(picked) < limit:
        ready = [(items[heads[p]].delivered_at, p) for p, items in pending.items() if heads[p] < len(items)]
        if not ready:
            break
        _, p = min(ready)
        item = pending[p][heads[p]]
        heads[p] += 1
        picked.append(item)
        positions[p] = item.offset + 1
    return picked, positions
