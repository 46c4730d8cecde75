"""`sgbus replay --failed`: route again the allowed shares whose view could not be built (a
request on sg.replay naming where the event is on sg.events; route fetches it there)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from bus.audit.chain import AuditStore
from bus.kafka_io import committed_reader, idempotent_producer, produce_all, read_placed, read_topic
from bus.records import ReplayRequest
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import REPLAY_GROUP_PREFIX
from bus.topics import DLQ, EVENTS, REPLAY


@dataclass
class ReplayReport:
    failed: int = 0
    already_delivered: int = 0
    replayed_events: int = 0
    replayed_shares: int = 0
    #: shares a replay not routed yet already carries (left to it)
    already_replayed: int = 0
    #: shares whose view_failed record holds no proof (an earlier release's): not replayable
    unproven: int = 0
    missing: list[str] = field(default_factory=list)


@dataclass
class FailedShares:
    """What the view_failed dead letters claim of one event: every place it is said to be (in the
    order of the dead letters) and the recipients whose view failed."""

    places: list[tuple[str, int, int]] = field(default_factory=list)
    recipients: set[str] = field(default_factory=set)
    #: where each recipient's view failed: (recipient, topic, partition, offset) of the event routed
    failed_at: set[tuple[str, str, int, int]] = field(default_factory=set)


def failed_shares(dlq_values: Iterable[bytes]) -> tuple[int, dict[str, FailedShares]]:
    """The view_failed dead letters among sg.dlq's records (how many, and per ingest id).

    sg.dlq is written by several principals (a partner's delivery connector among them): take
    nothing from it on trust. A record counts only if well formed, and it can point only into
    sg.events or sg.replay (an ingress record shaped like an event must never be replayed); the
    caller also checks the ingest id of the event found there and that the audit store holds
    the view_failed claimed."""
    count, wanted = 0, dict[str, FailedShares]()
    for value in dlq_values:
        try:
            rec = json.loads(value)
            if rec.get("stage") != "route" or not any(r.get("code") == "view_failed" for r in rec["reasons"]):
                continue
            ingest_id, recipient = str(uuid.UUID(str(rec["ingest_id"]))), str(rec["recipient"])
            partition, offset = int(rec["events_partition"]), int(rec["events_offset"])
            topic = rec.get("events_topic", EVENTS)  # written before sg.replay existed: sg.events
            if topic not in (EVENTS, REPLAY):
                continue
        except Exception:  # noqa: S112 - anything can be written to sg.dlq (1e999, deep nesting): skip it
            continue
        count += 1
        entry = wanted.setdefault(ingest_id, FailedShares())
        if (topic, partition, offset) not in entry.places:
            entry.places.append((topic, partition, offset))
        entry.recipients.add(recipient)
        entry.failed_at.add((recipient, topic, partition, offset))
    return count, wanted


#: a share put on sg.replay: (ingest id, recipient) -> each request for it: where the request is
#: on sg.replay (partition, offset) and where it says the event is on sg.events (partition, offset)
Replays = dict[tuple[str, str], list[tuple[int, int, int, int]]]


def replays_on_topic(placed: Iterable[tuple[int, int, bytes]]) -> Replays:
    """Each request on sg.replay, per (ingest id, recipient) share. Anything else there (an event
    put there whole by an earlier sgbus, which route now refuses) holds no share back."""
    found: Replays = {}
    for partition, offset, value in placed:
        try:
            request = ReplayRequest.model_validate_json(value)
        except ValueError:
            continue
        for r in request.replay_for:
            found.setdefault((str(request.ingest_id), r), []).append(
                (partition, offset, request.events_partition, request.events_offset))
    return found


REFUSALS = ("replay_malformed", "replay_mismatch", "replay_missing", "replay_unproven", "replay_unavailable")


#: where on sg.replay a request route refused is -> the recipients it refused (None: all of them)
Refused = dict[tuple[int, int], frozenset[str] | None]


def refused_requests(dlq_values: Iterable[bytes]) -> Refused:
    """The requests route refused (its dead letters say where on sg.replay, and, when it routed
    the request for some recipients and dropped others, which): no longer on their way for those
    recipients, so their shares may be asked for again. Anyone who may write sg.dlq could claim
    a refusal: at worst a share is asked for again, decided and audited again, and the partner
    may get it twice (README, "Keys ready before use")."""
    found: Refused = {}
    for value in dlq_values:
        try:
            rec = json.loads(value)
            if rec.get("stage") != "route" or rec.get("topic") != REPLAY or rec.get("reason") not in REFUSALS:
                continue
            place = (int(rec["partition"]), int(rec["offset"]))
            named = rec.get("recipients")
            who = frozenset(str(r) for r in named) if isinstance(named, list) else None
        except Exception:  # noqa: S112 - anything can be written to sg.dlq: skip it
            continue
        earlier = found.get(place, frozenset())
        found[place] = None if who is None or earlier is None else earlier | who
    return found


def _refused_for(refused: Refused, place: tuple[int, int], recipient: str) -> bool:
    if place not in refused:
        return False
    who = refused[place]
    return who is None or recipient in who


def pending(shares: FailedShares, ingest_id: str, replays: Replays, originals: set[tuple[int, int]],
            refused: Refused) -> set[str]:
    """The recipients of a share already requested on sg.replay and not routed yet: a request
    for it that names the event where the view_failed dead letters say it is (`originals`, on
    sg.events) and that no view_failed dead letter names (a request routed and failed again is
    named by the dead letter it caused; one delivered shows in the audit store, checked by the
    caller). Replaying again meanwhile would deliver twice once both are routed. A request
    naming another place (anyone who may write sg.replay could leave one that route refuses),
    or one route refused (`refused`, its places on sg.replay), holds nothing back."""
    return {r for r in shares.recipients
            if any((r, REPLAY, partition, offset) not in shares.failed_at and (at_p, at_o) in originals
                   and not _refused_for(refused, (partition, offset), r)
                   for partition, offset, at_p, at_o in replays.get((ingest_id, r), []))}


#: how long replay may take to read sg.dlq, and sg.replay, each to its end
READ_S = 60.0
#: its consumers' group (never joined: they assign), within the sgbus-replay principal's prefix
GROUP = REPLAY_GROUP_PREFIX + "tool"


def original_place(place: tuple[str, int, int], ingest_id: str,
                   on_replay: dict[tuple[int, int], bytes]) -> tuple[int, int] | None:
    """Where on sg.events the event a dead letter names is: the place itself, or, for a replay
    that failed again (the dead letter names its request on sg.replay), the place that request
    names, if it is a request for this ingest id."""
    topic, partition, offset = place
    if topic == EVENTS:
        return partition, offset
    try:
        request = ReplayRequest.model_validate_json(on_replay.get((partition, offset), b""))
    except ValueError:
        return None  # gone, or not a request (an event put there whole by an earlier sgbus)
    if str(request.ingest_id) != ingest_id:
        return None
    return request.events_partition, request.events_offset


def replay_failed(access: KafkaAccess, store: AuditStore, *, dry_run: bool = False) -> ReplayReport:
    """Find view_failed dead letters, skip shares the audit store shows as delivered since,
    and put a request for each remaining event on sg.replay (which every route agent reads):
    where the event is on sg.events and just its missed recipients. Route takes the event from
    sg.events itself and checks it is the one named (bus/agents/replays.py); this reads no event."""
    report = ReplayReport()
    # Both read to their ends or not at all: a dead letter missed under-replays, a
    # pending replay missed is replayed again (delivered twice once both are routed).
    dead_letters = read_topic(access, DLQ, timeout_s=READ_S, whole=True, group=GROUP)
    report.failed, wanted = failed_shares(dead_letters)
    refused = refused_requests(dead_letters)
    # The audit store (which only the audit stage writes) says which views failed, and holds each
    # one's replay proof: sg.dlq is written by other principals too.
    failed = store.view_failed(list(wanted))
    for ingest_id, shares in wanted.items():
        shares.recipients &= {r for i, r in failed if i == ingest_id}
    delivered = store.delivered(list(wanted))
    placed = read_placed(access, REPLAY, timeout_s=READ_S, whole=True, group=GROUP) if wanted else []
    replays = replays_on_topic(placed)
    on_replay = {(partition, offset): value for partition, offset, value in placed}
    consumer = committed_reader(access, GROUP)
    out: list[tuple[str, bytes, bytes]] = []
    try:
        for ingest_id, shares in sorted(wanted.items()):
            todo = sorted(r for r in shares.recipients if (ingest_id, r) not in delivered)
            report.already_delivered += len(shares.recipients) - len(todo)
            originals = [p for p in (original_place(place, ingest_id, on_replay) for place in shares.places)
                         if p is not None]
            waiting = pending(shares, ingest_id, replays, set(originals), refused)
            report.already_replayed += sum(1 for r in todo if r in waiting)
            todo = [r for r in todo if r not in waiting]
            if not todo:
                continue
            # The first place still on sg.events (the original may be past its retention).
            found = next((p for p in originals if _still_there(consumer, *p)), None)
            if found is None:
                report.missing.append(ingest_id)
                continue
            # A view_failed record of an earlier release holds no proof: route would drop it.
            proofs = {r: proof for r in todo if (proof := failed.get((ingest_id, r))) is not None}
            report.unproven += len(todo) - len(proofs)
            todo = [r for r in todo if r in proofs]
            if not todo:
                continue
            request = ReplayRequest(ingest_id=uuid.UUID(ingest_id), events_partition=found[0],
                                    events_offset=found[1], replay_for=todo, proofs=proofs)
            out.append((REPLAY, ingest_id.encode(), request.model_dump_json().encode()))
            report.replayed_events += 1
            report.replayed_shares += len(todo)
    finally:
        consumer.close()
    if out and not dry_run:
        produce_all(idempotent_producer(access), out)
    return report


def _still_there(consumer: Consumer, partition: int, offset: int) -> bool:
    """Whether sg.events still holds that offset (not yet past its retention): its watermarks
    only, so this principal needs no right to read the events."""
    low, high = consumer.get_watermark_offsets(TopicPartition(EVENTS, partition), timeout=10, cached=False)
    return low <= offset < high
