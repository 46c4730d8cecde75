"""Route's side of replays: a request on sg.replay names an event on sg.events, fetched from there.

`sgbus replay --failed` runs as a principal of its own (`sgbus-replay`) that may write sg.replay.
Had it put events there (as it once did), whoever held its password could have written any
event it liked (an emergency override added, a payload changed) and route would have shared it.
It puts only references (bus/records.py ReplayRequest): route takes the event from sg.events,
which only ingest writes, checks it is the one the request names, and routes it for the
recipients named, each decided by the policy and audited as any share. And only for recipients
whose view really failed, each with the proof its view_failed audit record holds
(bus/replay_proofs.py); without it a recipient is dropped (a partner who joined since could
otherwise be sent an older event).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from bus import logs
from bus.kafka_io import committed_reader, partitions_of
from bus.pseudonymise.keyring import Keyring
from bus.records import PseudonymisedEvent, ReplayRequest
from bus.replay_proofs import proven
from bus.security.kafka_access import KafkaAccess
from bus.topics import EVENTS

#: how long a fetch waits for Kafka's answer before the batch is held and the fetch retried
FETCH_S = 10.0
#: how long a route batch is held, in all, while sg.events cannot say whether a replayed event is there
REPLAY_HOLD_S = 300.0
log = logs.get("sgbus.replays")

Fetch = Callable[[int, int], bytes | None]


class FetchUnavailable(Exception):
    """sg.events could not be read just now (the broker, a leader change): hold the batch and
    retry; never a reason to refuse a replay for good."""


class EventsReader:
    """Single records of sg.events by position (committed records only), for replay requests.
    One consumer per worker, used by one caller at a time; it joins no group."""

    def __init__(self, access: KafkaAccess, group: str) -> None:
        self._access, self._group = access, group
        self._consumer: Consumer | None = None
        self._partitions = 0
        self._lock = threading.Lock()

    def fetch(self, partition: int, offset: int) -> bytes | None:
        """The value at (partition, offset) of sg.events, or None when there is no such record
        (no such partition; before the partition's start: retention; at or past its end).
        Raises FetchUnavailable when Kafka does not say either way within FETCH_S."""
        with self._lock:
            if self._consumer is None:
                self._consumer = committed_reader(self._access, self._group, eof=True)
            consumer = self._consumer
            if partition >= self._partitions:  # checked once known, then again only for a higher number
                try:
                    self._partitions = len(partitions_of(consumer, EVENTS))
                except Exception as exc:  # the broker, or sg.events not there (yet)
                    raise FetchUnavailable(type(exc).__name__) from None
                if partition >= self._partitions:
                    return None  # a partition sg.events does not have: it would wait, never answer
            consumer.assign([TopicPartition(EVENTS, partition, offset)])
            try:
                for _ in range(int(FETCH_S / 0.5)):
                    msg = consumer.poll(0.5)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return None  # past the end: no such record
                        continue  # librdkafka reports and retries; the deadline decides
                    # Another offset: this one is gone (retention), and the reset moved the read on.
                    return msg.value() if msg.offset() == offset else None
                raise FetchUnavailable("no answer from sg.events")
            finally:
                consumer.unassign()

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


@dataclass
class Resolved:
    """What route makes of a replay request: the event to route again (or None, and `problem`, a
    dead letter's code), and the recipients it named without a valid proof (dropped)."""

    event: PseudonymisedEvent | None
    problem: str = ""
    unproven: list[str] = field(default_factory=list)


def resolve(raw: bytes, fetch: Fetch, keyring: Keyring) -> Resolved:
    """The event a replay request names, sg.events' own record, for the request's recipients
    whose proof holds. FetchUnavailable goes up (the caller holds the batch and retries)."""
    try:
        request = ReplayRequest.model_validate_json(raw)
    except ValidationError:
        return Resolved(None, "replay_malformed")  # an event put there whole (an earlier sgbus), or anything else
    ingest_id = str(request.ingest_id)
    recipients = [r for r in request.replay_for if proven(keyring, ingest_id, r, request.proofs.get(r))]
    unproven = [r for r in request.replay_for if r not in recipients]
    if not recipients:
        return Resolved(None, "replay_unproven", unproven)
    try:
        original = fetch(request.events_partition, request.events_offset)
    except FetchUnavailable:
        raise
    except Exception as exc:  # a request the client cannot even ask about: refused, never a stopped worker
        log.warning("replay_fetch_failed", error=type(exc).__name__)
        return Resolved(None, "replay_missing")
    if original is None:
        return Resolved(None, "replay_missing")
    try:
        event = PseudonymisedEvent.model_validate_json(original)
    except ValidationError:
        return Resolved(None, "replay_mismatch")  # the place holds something, not the event named
    if event.ingest_id != request.ingest_id or event.replay_for is not None:
        return Resolved(None, "replay_mismatch")
    return Resolved(event.model_copy(update={"replay_for": recipients}), "", unproven)


async def resolve_holding(raw: bytes, fetch: Fetch, keyring: Keyring, hold_until: float, *,
                          first_backoff_s: float = 0.5) -> Resolved:
    """`resolve` in a thread, off the event loop. While Kafka cannot say whether the event is
    there, hold (the caller has sent nothing yet, so no transaction is open) and retry, until
    `hold_until` (the event loop's clock; one deadline for the caller's whole batch): a passing
    outage must not refuse a replay, nor a lasting one (or a request naming a partition no broker
    leads) stop routing; refused then as `replay_unavailable`, `sgbus replay --failed` may ask
    again. Any other failure refuses the request (`replay_malformed`), never stops the worker."""
    loop = asyncio.get_running_loop()
    backoff = first_backoff_s
    while True:
        try:
            return await asyncio.to_thread(resolve, raw, fetch, keyring)
        except FetchUnavailable as exc:
            if loop.time() >= hold_until:
                return Resolved(None, "replay_unavailable")
            log.warning("replay_fetch_unavailable_holding_batch", cause=str(exc), retry_in_s=backoff)
            await asyncio.sleep(min(backoff, max(0.0, hold_until - loop.time())))
            backoff = min(backoff * 2, 5.0)
        except Exception as exc:
            log.warning("replay_request_failed", error=type(exc).__name__)
            return Resolved(None, "replay_malformed")
