"""The audit chain heads published outside the database, on the compacted `sg.audit.heads`."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, TopicPartition

from bus.audit.chain import Checkpoint
from bus.audit.signer import AuditVerifier
from bus.exceptions import StackError
from bus.kafka_io import committed_reader, partitions_of
from bus.security.kafka_access import KafkaAccess
from bus.topics import AUDIT_HEADS


def latest_head(access: KafkaAccess, timeout_s: float = 20.0, *, verifier: AuditVerifier | None = None,
                group: str = "sgbus-audit-verify") -> Checkpoint | None:
    """The newest signed head on sg.audit.heads (None when none was published yet). Reads the
    whole (compacted) topic up to its end; the highest sequence number wins, among heads that
    `verifier` accepts when one is given (a forged head must not hide the genuine ones). Needs
    only READ on the topic, which every partner has."""
    consumer = committed_reader(access, group)
    try:
        best: Checkpoint | None = None
        for partition in partitions_of(consumer, AUDIT_HEADS):
            low, high = consumer.get_watermark_offsets(TopicPartition(AUDIT_HEADS, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(AUDIT_HEADS, partition, low)])
            deadline = time.monotonic() + timeout_s
            idle = 0
            while True:
                if time.monotonic() > deadline:
                    raise StackError(f"reading {AUDIT_HEADS} timed out after {timeout_s:.0f}s")
                msg = consumer.poll(0.5)
                value = msg.value() if msg is not None and msg.error() is None else None
                if value is not None:
                    idle = 0
                    try:
                        head = Checkpoint.from_json(value)
                    except (ValueError, KeyError, TypeError):
                        head = None  # not a head: ignored (verification still needs a good one)
                    if head is not None and verifier is not None and not head.verifies(verifier):
                        head = None  # not signed by the audit stage's keys: ignored
                    if head is not None and (best is None or head.seq > best.seq):
                        best = head
                else:
                    idle += 1
                position = consumer.position([TopicPartition(AUDIT_HEADS, partition)])[0].offset
                # read_committed: the last offset can be a transaction marker, never returned, so
                # one short of the end counts as the end only once nothing more arrives.
                if position >= high or (position >= high - 1 and idle >= 4):
                    break
        return best
    except KafkaException as exc:
        raise StackError(f"reading {AUDIT_HEADS} failed: {exc}") from None
    finally:
        consumer.close()
