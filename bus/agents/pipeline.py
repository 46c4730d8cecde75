"""The ingest, route and audit agents: ingress -> sg.events -> sg.deliver.<partner> + sg.audit
-> the audit store; all in one app (at-least-once) or one stage per app (exactly-once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import TP
from mode import CrashingSupervisor
from pydantic import ValidationError

from bus import logs
from bus.agents.batching import take_ready
from bus.agents.direct_producer import DirectProducer
from bus.agents.guard import guarded
from bus.agents.replays import REPLAY_HOLD_S, Resolved, resolve_holding
from bus.agents.sends import BatchSends, SendFailed, SendLedger, send_dead_letter
from bus.audit.chain import IngestedCheck
from bus.audit.watch import AuditWatch
from bus.audit_process import AuditWriter
from bus.exceptions import PolicyUnavailable
from bus.helper_process import HelperTaskFailed, describe
from bus.ingest import IngestOutcome, Record, prepare_batch, rejected
from bus.ingest_process import IngestProcess, IngestProcessFailed
from bus.metrics import deny_category
from bus.records import AuditRecord, DeadLetter, PseudonymisedEvent, encode_audit_batches
from bus.redaction.errors import RedactorUnavailable
from bus.route import ProbeAhead, RoutePlan, delivery_latency_s
from bus.topics import AUDIT, AUDIT_HEADS, AUDIT_HEADS_KEY, DLQ, EVENTS, REPLAY, ingress_topic, route_sources
from schemas.envelope import Agency

log = logs.get("sgbus.worker")


STAGES = ("ingest", "route", "audit", "concern")
#: the sharing pipe: what `worker --stage all` runs in one app (the concern runs beside it, always
#: in its own app and process: bus/concern/agent.py)
SHARING_STAGES = ("ingest", "route", "audit")
#: the stages that run with Kafka transactions when alone (`worker --stage`); concern is at-least-once
EXACTLY_ONCE_STAGES = ("ingest", "route", "audit")


#: sg.audit messages the audit agent stores in one transaction, and how many it reads ahead
AUDIT_BATCH_MESSAGES = 20
AUDIT_READ_AHEAD = 5 * AUDIT_BATCH_MESSAGES

#: on an sg.events record the all-in-one worker that wrote it has routed already: every route agent skips it
ROUTED_AT_INGEST = (("sgbus-routed", b"ingest"),)


def routed_at_ingest(headers: Any) -> bool:
    """Whether a record's headers (Faust gives a list of pairs or a mapping) say it was routed."""
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    return any((k, v) in ROUTED_AT_INGEST for k, v in pairs)


@dataclass
class _RouteRound:
    """Events a route batch decides together, each ingest id once: its source partition (whose
    transaction its outputs go in) and where each event is (for a failed view's dead letter)."""

    parsed: list[PseudonymisedEvent] = field(default_factory=list)
    source: dict[str, TP] = field(default_factory=dict)
    where: dict[int, tuple[str, int, int]] = field(default_factory=dict)

    async def position(self, event: PseudonymisedEvent) -> tuple[str, int, int]:
        return self.where[id(event)]


def routes_at_ingest(settings: Any, stages: tuple[str, ...], exactly_once: bool) -> bool:
    """Whether a worker of `stages` routes each event in the batch that ingested it (the
    all-in-one worker, unless SGBUS_ROUTE_AT_INGEST=false); its route agent then reads only
    replays (bus/topics.py route_sources)."""
    return not exactly_once and "ingest" in stages and "route" in stages and settings.route_at_ingest


def register_key(event: PseudonymisedEvent) -> str:
    """Event ids are unique per source organisation: one organisation cannot squat another's."""
    return f"{event.source.agency.value}/{event.source.org_id}/{event.event_id}"


def register(app: faust.App, svc: Any, stages: tuple[str, ...] = STAGES, *,
             exactly_once: bool = False) -> None:
    """Register the agents of `stages` on `app`. Sends are not awaited for acknowledgement:
    Faust flushes the producer (at-least-once) or commits the Kafka transaction (exactly-once)
    before it commits the consumed offsets."""
    settings, metrics = svc.settings, svc.metrics
    sends: SendLedger | None = getattr(app, "sends", None)  # bus/faust_kafka.py's App has one
    audit_watch = AuditWatch(settings, metrics)

    #: exactly-once: the batch's sends, each written before its transactions commit
    batch_sends = BatchSends()
    direct: DirectProducer | None = None if exactly_once else getattr(app, "direct", None)
    if direct is not None:
        async def start_direct_producer() -> None:
            direct.start()  # connects while the worker joins its group, not at the first batch

        app.task(guarded("sgbus.direct_producer", start_direct_producer))

    async def send(topic: faust.TopicT, key: bytes | None, value: bytes, source: TP,
                   headers: list[tuple[str, bytes]] | None = None, *,
                   position: bool = False) -> Awaitable[Any] | None:
        """Send; at-least-once with `position` returns an awaitable of where it was written
        (its partition and offset)."""
        if direct is not None:  # the all-in-one worker (bus/agents/direct_producer.py)
            return await direct.send(topic.get_topic_name(), key, value, headers, position=position)
        if not exactly_once:
            # Straight to the producer, not through Faust's topic.send (its message futures and
            # sensor callbacks). Faust flushes this producer before it commits the consumed
            # offsets, and the ledger stops that commit if a send failed (bus/agents/sends.py).
            name = topic.get_topic_name()
            sent = await app.producer.send(name, key, value, None, None, headers)
            if sends is not None:
                sends.track(name, sent)
            return sent
        # Faust (0.15.3) names a send's transaction after the *destination* topic-partition but
        # commits the consumed offsets in the *source* partition's transaction, so outside
        # co-partitioned topologies the two never commit together (sends left uncommitted, or
        # committed apart from their offsets: duplicates after a crash). Send in the source
        # partition's transaction, exactly as the commit names it.
        name = topic.get_topic_name()
        batch_sends.track(name, await app.producer.send(name, key, value, None, None, headers,
                                                        transactional_id=transactional_id(source)))
        return None

    def raw_topic(*names: str, maxsize: int | None = None) -> faust.TopicT:
        # Bytes in, bytes out: pydantic (de)serialises our models, not Faust's codecs.
        return app.topic(*names, key_serializer="raw", value_serializer="raw", maxsize=maxsize)

    # Exactly-once commits a Kafka transaction per batch (several broker round trips), so its
    # batches are larger still; the router splits a batch into policy queries of batch_size events.
    # The all-in-one worker's batches of 250 (100 before) made a burst ~6% faster in alternating
    # runs (500: ~8%, and ~10 MB more), latency at 50 and 200 events/s unchanged (docs/BENCHMARKS.md,
    # session 22): a batch's fixed costs, the hand-over to its helper processes and back above all,
    # are shared by more events.
    batch_size = settings.stage_batch_size if exactly_once else settings.worker_batch_size
    # The all-in-one worker routes what it has just ingested, in the same batch: one Kafka hop
    # (and one parse) fewer per event. sg.events is still written (the concern stage reads it,
    # replays find events there), marked as routed; its own route agent reads only sg.replay, not
    # sg.events: reading back every event only to skip it cost ~9% of its events/s (measured,
    # docs/BENCHMARKS.md session 22). A crash before the ingress offsets are committed repeats
    # the batch with the same ingest ids: delivered at least once, audited once, as when the two
    # hops were apart.
    route_at_ingest = routes_at_ingest(settings, stages, exactly_once)
    # Ingest's CPU work in a process of its own: the all-in-one worker routes one batch while
    # the next is prepared there; the ingest stage finishes and commits one batch (one
    # transaction) at a time while the next is prepared there. Either's own process stays small
    # (the redaction model is in the other) and its event loop free for heartbeats.
    ingest_process: IngestProcess | None = svc.ingest_process if "ingest" in stages else None
    ingress = raw_topic(*[ingress_topic(a) for a in Agency])
    events = raw_topic(EVENTS)
    route_source = raw_topic(*route_sources(route_at_ingest))
    # The audit stage reads ahead at most AUDIT_READ_AHEAD messages (five of its batches): each
    # carries up to 200 records, and Faust's default (4,096 messages) let it hold hundreds of
    # megabytes of a backlog in memory. Not in the all-in-one worker: one consumer feeds all its
    # agents, and a full audit queue would hold back its ingress too; its topics take its own
    # buffer (SGBUS_WORKER_STREAM_BUFFER, bus/app.py).
    audit = raw_topic(AUDIT, maxsize=AUDIT_READ_AHEAD if exactly_once else None)
    dlq = raw_topic(DLQ)
    audit_heads = raw_topic(AUDIT_HEADS)
    deliver_topics: dict[str, faust.TopicT] = {}

    def deliver_topic(name: str) -> faust.TopicT:
        if name not in deliver_topics:
            deliver_topics[name] = raw_topic(name)
        return deliver_topics[name]

    async def dead_letter(dl: DeadLetter, tp: TP) -> None:
        await send_dead_letter(lambda key, value: send(dlq, key, value, tp), dl)
        code = dl.reasons[0]["code"] if dl.reasons else "unknown"
        metrics.events_rejected.labels(code).inc()
        metrics.dlq.labels(code).inc()
        log.warning("event_rejected", topic=dl.topic, offset=dl.offset, code=code,
                    field=dl.reasons[0]["field"] if dl.reasons else "$")

    async def prepare(batch: list[faust.EventT[bytes]]) -> list[IngestOutcome]:
        """Check and pseudonymise a batch (in a thread, or in ingest's own process): one outcome
        per event, in order. While the signing key register or the redactor is unavailable,
        hold the batch (nothing sent, offsets not committed) and retry."""
        records = [Record(ev.value, ev.message.topic, ev.message.partition, ev.message.offset,
                          int(ev.message.timestamp * 1000) if ev.message.timestamp else 0) for ev in batch]
        backoff = 0.1
        while True:
            try:
                signers = await svc.signers.current()  # an HTTP call (in a thread) when due
                break
            except PolicyUnavailable as exc:  # no signing key register yet: hold the batch
                log.warning("signers_unavailable_holding_batch", events=len(batch), retry_in_s=backoff,
                            cause=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)
        # Only the free text some agreement may want redacted (route redacts any other a
        # reloaded policy asks for): redaction was most of ingest's time.
        redact = svc.router.partnership.redact_plan
        backoff = 0.1
        while True:
            try:
                outcomes = await run_prepare(records, signers, redact, final=False)
                again = [i for i, out in enumerate(outcomes) if out is None]
                if again:  # a key issued since the register was last read: read it again, then decide
                    fresh = await svc.signers.current(unknown_key=True)
                    redone = await run_prepare([records[i] for i in again], fresh, redact, final=True)
                    for i, out in zip(again, redone, strict=True):
                        outcomes[i] = out
                return cast(list[IngestOutcome], outcomes)  # `final` left no None
            except RedactorUnavailable as exc:  # fail closed: nothing shared, nothing lost, retried
                metrics.redaction_unavailable.inc()
                log.error("redactor_unavailable_holding_batch", events=len(batch), retry_in_s=backoff, cause=str(exc))
            except IngestProcessFailed as exc:
                metrics.ingest_process_failed.inc()
                log.error("ingest_process_failed_holding_batch", events=len(batch), retry_in_s=backoff,
                          cause=str(exc))
            except HelperTaskFailed as exc:  # held, not raised: raising would stop the worker, and an outage is no bug
                log.error("ingest_process_error_holding_batch", events=len(batch), retry_in_s=backoff,
                          cause=str(exc))
            except PolicyUnavailable as exc:  # the register for an unknown key could not be read: hold
                log.warning("signers_unavailable_holding_batch", events=len(batch), retry_in_s=backoff,
                            cause=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max_backoff_s)

    async def run_prepare(records: list[Record], signers: Any, redact: Any, *,
                          final: bool) -> list[IngestOutcome | None]:
        if ingest_process is not None:
            return await ingest_process.prepare(records, signers, redact, final=final)
        # A thread, so that long texts do not stall the event loop (heartbeats, transactions).
        return await asyncio.to_thread(prepare_batch, records, signers, svc.keyring, redact, final=final)

    async def ingest_batch(batch: list[faust.EventT[bytes]]) -> None:
        ahead = svc.router.probe_ahead() if route_at_ingest else None
        try:
            await ingest_prepared(batch, await prepare(batch), ahead)
        finally:
            if ahead is not None:
                ahead.discard()

    async def ingest_prepared(batch: list[faust.EventT[bytes]], outcomes: list[IngestOutcome],
                              ahead: ProbeAhead | None = None) -> None:
        """Register what passed and write it to sg.events, in order (routing at ingest, also route
        it, and write it there just before its copies), all before the caller acks the batch."""
        # Event ids are the publisher's claim: the first content seen under an id wins; the same
        # content again is a harmless replay; other content under a used id is dead-lettered.
        checks = [IngestedCheck(register_key(o.event), o.event.provenance.content_sha256, str(o.event.ingest_id))
                  for o in outcomes if o.event is not None]
        first = await _register_with_retry(checks) if checks else {}
        to_route: list[PseudonymisedEvent] = []
        to_write: list[tuple[PseudonymisedEvent, bytes, bytes, TP]] = []
        positions: dict[int, Awaitable[Any]] = {}
        sources: dict[str, TP] = {}
        for ev, out in zip(batch, outcomes, strict=True):
            msg = ev.message
            if out.event is None:
                if out.dead_letter is not None:
                    await dead_letter(out.dead_letter, msg.tp)
                continue
            seen = first.get(register_key(out.event))
            if seen is not None and seen.ingest_id != str(out.event.ingest_id):
                if seen.content_sha256 == out.event.provenance.content_sha256:
                    metrics.events_replayed.inc()
                    continue
                await dead_letter(rejected(ev.value, [{
                    "field": "event_id", "code": "duplicate_event_id",
                    "message": "this event id was already used for an event with other content"}],
                    topic=msg.topic, partition=msg.partition, offset=msg.offset).dead_letter, msg.tp)  # type: ignore[arg-type]
                continue
            if out.override_refused is not None:
                metrics.overrides_refused.labels(out.override_refused).inc()
                log.warning("override_refused", code=out.override_refused, topic=msg.topic, offset=msg.offset,
                            event_type=out.event.event_type)
            key = out.event.subject_key.encode()
            value = out.event_json if out.event_json is not None else out.event.model_dump_json().encode()
            if route_at_ingest:
                # Written with its copies, after the policy query, rather than now: the sends
                # of one batch then go out in one produce request, not two (at 50 events/s, a
                # fifth fewer requests to the broker).
                to_write.append((out.event, key, value, msg.tp))
                to_route.append(out.event)
                sources[str(out.event.ingest_id)] = msg.tp
            else:
                await send(events, key, value, msg.tp)
            metrics.events_ingested.labels(out.event.source.agency.value, out.event.event_type).inc()
        if not to_route:
            return

        async def write_events() -> None:
            for event, key, value, tp in to_write:
                sent = await send(events, key, value, tp, list(ROUTED_AT_INGEST), position=True)
                assert sent is not None  # at-least-once only
                positions[id(event)] = sent

        async def position(event: PseudonymisedEvent) -> tuple[str, int, int]:
            meta = await positions[id(event)]  # acked by now or soon: the producer is flushing
            return EVENTS, int(meta.partition), int(meta.offset)

        await route_events(to_route, sources, position, write_events, ahead)

    def transactional_id(source: TP) -> str:
        return f"{app.conf.id}-{app.assignor.group_for_topic(source.topic)}-{source.partition}"

    counter = None
    if "concern" in stages and svc.concern_sign is not None:
        from bus.concern.agent import ConcernCounter

        counter = ConcernCounter(app, svc, send, raw_topic(ingress_topic(Agency.BUS)), svc.concern_sign)

    async def commit_batch(batch: list[faust.EventT[bytes]]) -> None:
        """Exactly-once: each stage runs one actor, which commits, after its whole batch, the
        transaction of each source partition with the offset just past the batch's last event
        there. Faust's own commit is not used: it is timed (it can land mid-batch), its offset
        bookkeeping can stop short of a committed batch (gaps left by transaction markers), and
        it shares one transaction between source topics with the same partition count; each of
        these left repeats on partner topics after a crash."""
        if not exactly_once:
            return
        failed = await batch_sends.failure()
        if failed is not None:  # stop uncommitted: the restarted stage aborts the transaction and redoes the batch
            topic, error = failed
            log.error("send_failed_not_committing", topic=topic, error=type(error).__name__)
            raise SendFailed(f"a record for {topic} was not written ({type(error).__name__}); "
                             "its batch's transactions are not committed")
        by_tid: dict[str, dict[TP, int]] = {}
        for ev in batch:
            tp = ev.message.tp
            offsets = by_tid.setdefault(transactional_id(tp), {})
            offsets[tp] = max(offsets.get(tp, 0), ev.message.offset + 1)
        producer: Any = app.producer
        await producer.commit_transactions(by_tid, app.conf.id, start_new_transaction=True)
        # Keep Faust's ack lists from growing: nothing else commits through them.
        consumer: Any = app.consumer
        for offsets in by_tid.values():
            for tp, offset in offsets.items():
                consumer._acked[tp].clear()
                consumer._acked_index[tp].clear()
                consumer._committed_offset[tp] = offset

    async def ingest_agent(stream: faust.StreamT[bytes]) -> None:
        # Batches (events keep each message's topic and offset for the dead letter): one
        # register round trip to the store per batch.
        if ingest_process is not None and route_at_ingest:
            await ingest_pipelined(stream)
            return
        if ingest_process is not None and exactly_once:
            await ingest_prepared_ahead(stream)
            return
        async for batch in take_ready(stream, batch_size, settings.batch_window_s):
            await ingest_batch(batch)
            await commit_batch(batch)

    async def ingest_prepared_ahead(stream: faust.StreamT[bytes]) -> None:
        """The ingest stage (exactly-once) finishes and commits one batch at a time, and takes
        the next and has it prepared in ingest's process meanwhile (~6% more events/s through
        the stages, alternating 20,000-event runs; docs/BENCHMARKS.md session 24). Preparing
        sends and registers nothing, so nothing of the next batch enters the open transaction;
        its offsets are committed with its own transaction once it is finished, and its events
        acked then. Stopped or failed, what is in flight is neither committed nor acked."""
        batches = take_ready(stream, batch_size, settings.batch_window_s, defer_acks=True)

        async def take_and_prepare() -> tuple[list[faust.EventT[bytes]], asyncio.Future[list[IngestOutcome]]]:
            batch = await anext(batches)
            return batch, asyncio.ensure_future(prepare(batch))

        coming = asyncio.ensure_future(take_and_prepare())
        prepared: asyncio.Future[list[IngestOutcome]] | None = None
        try:
            while True:
                try:
                    batch, prepared = await coming
                except StopAsyncIteration:
                    break
                coming = asyncio.ensure_future(take_and_prepare())
                await ingest_prepared(batch, await prepared)
                await commit_batch(batch)
                for ev in batch:
                    await stream.ack(ev)
        finally:
            unfinished = [f for f in (coming, prepared) if f is not None and not f.done()]
            if coming.done() and not coming.cancelled() and coming.exception() is None:
                unfinished.append(coming.result()[1])  # the next batch's preparation
            for pending in unfinished:
                pending.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def ingest_pipelined(stream: faust.StreamT[bytes]) -> None:
        """While batch N is registered, sent and routed here, ingest's process prepares batch
        N+1. Batches are finished one at a time, in order, and each is acked only once it is
        finished, so a crash repeats what was in flight (at least once, as ever)."""

        async def finish(batch: list[faust.EventT[bytes]], prepared: asyncio.Future[list[IngestOutcome]],
                         ahead: ProbeAhead | None) -> None:
            try:
                await ingest_prepared(batch, await prepared, ahead)
            finally:
                if ahead is not None:
                    ahead.discard()
            for ev in batch:
                await stream.ack(ev)

        batches = take_ready(stream, batch_size, settings.batch_window_s, defer_acks=True)
        finishing: asyncio.Future[None] | None = None
        coming: asyncio.Future[list[faust.EventT[bytes]]] | None = None
        prepared: asyncio.Future[list[IngestOutcome]] | None = None
        ahead: ProbeAhead | None = None
        try:
            while True:
                coming = asyncio.ensure_future(anext(batches))
                # Wait for the next batch, but give up on it if the one being finished fails
                # (a quiet stream must not keep that error waiting).
                while finishing is not None and not coming.done():
                    either: set[asyncio.Future[Any]] = {coming, finishing}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if finishing.done():
                        finishing.result()  # raises its error
                        finishing = None
                try:
                    batch = await coming
                except StopAsyncIteration:
                    break
                prepared = asyncio.ensure_future(prepare(batch))
                # The batch's cache spot check goes to OPA now, beside ingest's work.
                ahead = svc.router.probe_ahead()
                if finishing is not None:
                    await finishing
                finishing = asyncio.ensure_future(finish(batch, prepared, ahead))
                ahead = None  # finish's now
            if finishing is not None:
                await finishing
        finally:
            # Stopped or failed: what is unfinished is not acked (the group hands it out again).
            # Wait for the cancelled work to unwind, so none of it runs on past the agent.
            if ahead is not None:
                ahead.discard()
            unfinished = [f for f in (coming, prepared, finishing) if f is not None and not f.done()]
            for pending in unfinished:
                pending.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _resolve_replay(raw: bytes, hold_until: float) -> Resolved:
        reader = svc.events_reader
        if reader is None:  # a worker without the route stage reads no sg.replay
            return Resolved(None, "replay_missing")
        return await resolve_holding(raw, reader.fetch, svc.keyring, hold_until)

    async def route_agent(stream: faust.StreamT[bytes]) -> None:
        async for batch in take_ready(stream, batch_size, settings.batch_window_s):
            # Everything is read (replays fetched) before anything is sent: a held fetch never
            # keeps an exactly-once transaction open.
            rounds: list[_RouteRound] = []
            refused: list[tuple[faust.EventT[bytes], str, list[str]]] = []
            # One hold for the whole batch, however many of its requests cannot be fetched.
            hold_until = asyncio.get_running_loop().time() + REPLAY_HOLD_S
            for ev in batch:
                if routed_at_ingest(ev.message.headers):
                    continue  # the all-in-one worker that ingested it routed it (a replay has no such header)
                problem = "malformed_internal"
                event: PseudonymisedEvent | None
                if ev.message.topic == REPLAY:  # a request naming an event on sg.events (bus/agents/replays.py)
                    resolved = await _resolve_replay(ev.value, hold_until)
                    event, problem = resolved.event, resolved.problem
                    if event is not None and resolved.unproven:  # routed for the others; these said so
                        refused.append((ev, "replay_unproven", resolved.unproven))
                else:
                    try:
                        event = PseudonymisedEvent.model_validate_json(ev.value)
                    except ValidationError:
                        event = None
                if event is None:
                    refused.append((ev, problem, []))
                    continue
                # Outputs go out with their own event's source partition, found by ingest id: an
                # ingest id met twice in one batch (an event and a replay of it) goes in a round
                # of its own.
                key = str(event.ingest_id)
                here = next((r for r in rounds if key not in r.source), None)
                if here is None:
                    here = _RouteRound()
                    rounds.append(here)
                here.parsed.append(event)
                here.source[key] = ev.message.tp
                here.where[id(event)] = (ev.message.topic, ev.message.partition, ev.message.offset)
            for ev, problem, recipients in refused:
                metrics.dlq.labels(problem).inc()
                log.warning("route_input_refused", code=problem, topic=ev.message.topic,
                            partition=ev.message.partition, offset=ev.message.offset)
                # Where it is (sg.events or sg.replay), so it can be found again; never its content.
                # A refused request is no longer on its way: `sgbus replay --failed` may ask again.
                await send(dlq, None, json.dumps({
                    "stage": "route", "reason": problem, "topic": ev.message.topic,
                    "partition": ev.message.partition, "offset": ev.message.offset,
                    **({"recipients": recipients} if recipients else {})}).encode(), ev.message.tp)
            for one in rounds:
                await route_events(one.parsed, one.source, one.position)
            await commit_batch(batch)

    async def route_events(parsed: list[PseudonymisedEvent], source: dict[str, TP],
                           position: Callable[[PseudonymisedEvent], Awaitable[tuple[str, int, int]]],
                           before_copies: Callable[[], Awaitable[None]] | None = None,
                           ahead: ProbeAhead | None = None) -> None:
        """Decide, make the partners' copies, audit, dead-letter the views that failed."""
        plan = await _decide_with_retry(parsed, ahead)
        if before_copies is not None:
            await before_copies()
        for d in plan.deliveries:
            await send(deliver_topic(d.topic), d.key.encode(), d.event.model_dump_json().encode(),
                       source[str(d.ingest_id)])
        by_source: dict[TP, list[AuditRecord]] = {}
        for rec in plan.audits:
            by_source.setdefault(source[str(rec.ingest_id)], []).append(rec)
        for tp, records in by_source.items():
            for key, value in encode_audit_batches(records):
                await send(audit, key, value, tp)
        # Last: a failed view's dead letter waits for its event's position on sg.events, which
        # the all-in-one worker has only just sent (a replayed event's is on sg.replay).
        for failed in plan.failed:
            metrics.dlq.labels("view_failed").inc()
            metrics.views_failed.labels(failed.recipient).inc()
            log.error("view_failed", recipient=failed.recipient, error=failed.error)
            topic, partition, offset = await position(failed.event)
            # Where the event is (sg.events, or for a replay the request on sg.replay, which names
            # it on sg.events), so `sgbus replay --failed` can route it again.
            await send(dlq, str(failed.event.ingest_id).encode(), json.dumps({
                "stage": "route", "event_id": str(failed.event.event_id),
                "ingest_id": str(failed.event.ingest_id), "recipient": failed.recipient,
                "events_topic": topic, "events_partition": partition, "events_offset": offset,
                "reasons": [{"field": "$", "code": "view_failed", "message": failed.error}],
            }).encode(), source[str(failed.event.ingest_id)])
        try:
            _count_routed(plan, parsed)
        except Exception as exc:  # counting must never stop sharing (nor replay the batch)
            log.error("metrics_failed", error=type(exc).__name__)

    def _count_routed(plan: RoutePlan, parsed: list[PseudonymisedEvent]) -> None:
        partnership = svc.router.partnership
        metrics.calendar_in_force(partnership.school_calendar)
        published = {str(e.ingest_id): e.published_at for e in parsed}
        for d in plan.deliveries:
            partner = partnership.partner(d.event.recipient)
            metrics.delivered(event_type=d.event.event_type, recipient=d.event.recipient,
                              recipient_agency=partner.agency if partner else "", occurred_at=d.event.occurred_at,
                              published_at=published.get(str(d.ingest_id)), calendar=partnership.school_calendar)
            metrics.delivery_latency_seconds.observe(delivery_latency_s(d.event))
        for dec in plan.decisions:
            metrics.policy_decisions.labels("allow" if dec.allow else "deny", dec.agreement or "none").inc()
            if not dec.allow:
                metrics.policy_denials.labels(deny_category(dec.reasons)).inc()
            if dec.override:
                metrics.policy_overrides.labels(dec.agreement or "none").inc()
        metrics.audit_records.inc(len(plan.audits))
        metrics.policy_cache.labels("hit").inc(plan.cache_hits)
        metrics.policy_cache.labels("miss").inc(plan.cache_misses)

    audit_writer: AuditWriter | None = None
    if "audit" in stages:
        assert svc.audit_store is not None, "a worker with the audit stage opens the store"
        audit_writer = AuditWriter(svc.audit_store, svc.audit_signer, metrics, svc.audit_process,
                                   settings.retry_max_backoff_s)
        # The head on sg.audit.heads at start (SGBUS_AUDIT_ANCHOR=published): what the store must still hold.
        audit_watch.published = audit_writer.anchor = svc.audit_anchor

    async def audit_agent(stream: faust.StreamT[bytes]) -> None:
        """The single writer of the hash-chained audit store."""
        assert audit_writer is not None
        # A fixed 200 ms window: each batch is a store transaction, a signed checkpoint and a
        # published head, and nobody waits on this stage.
        async for batch in take_ready(stream, AUDIT_BATCH_MESSAGES, 0.2, min_window_s=0.2):
            done = await audit_writer.write([ev.value for ev in batch])
            if done.checkpoint is not None:
                # Outside the database: an insider who rewrites the store cannot take this back.
                await send(audit_heads, AUDIT_HEADS_KEY, done.checkpoint.to_json(), batch[-1].message.tp)
                metrics.audit_heads_published.inc()
                audit_watch.published = audit_writer.anchor = done.checkpoint
            await commit_batch(batch)

    # An error an agent does not handle (a bug) stops the worker, for its supervisor (systemd,
    # Kubernetes) to start again, rather than Faust restarting the agent past the batch it had
    # taken: Faust's commit steps over a one-offset gap (it takes it for a transaction marker),
    # so a failed one-event batch was lost, and a larger one stalled every later commit; in a
    # stage worker the next batch's transaction committed offsets past it. Restarted, the
    # worker takes the batch again (tests/integration/test_zz_agent_error.py). `guarded` keeps
    # the error's message (it can quote the event) out of the log Faust writes as it stops.
    if "ingest" in stages:
        app.agent(ingress, name="sgbus.ingest", supervisor_strategy=CrashingSupervisor)(
            guarded("sgbus.ingest", ingest_agent))
    if "route" in stages:
        app.agent(route_source, name="sgbus.route", supervisor_strategy=CrashingSupervisor)(
            guarded("sgbus.route", route_agent))
    if counter is not None:
        from bus.concern.agent import register_concern_agent

        register_concern_agent(app, counter, events, commit_batch)
    if "audit" in stages:
        app.agent(audit, name="sgbus.audit", concurrency=1, supervisor_strategy=CrashingSupervisor)(
            guarded("sgbus.audit", audit_agent))

        async def verify_audit_chain() -> None:
            # Beside the appends, not between them: the walk reads one snapshot of the chain
            # (AuditStore.snapshot), and on a long chain it takes minutes (~50 µs a record).
            await asyncio.to_thread(audit_watch.run)

        async def verify_audit_chain_at_start() -> None:
            await asyncio.sleep(min(5.0, settings.audit_verify_interval_s))
            await verify_audit_chain()

        app.timer(settings.audit_verify_interval_s, name="sgbus.audit.verify")(
            guarded("sgbus.audit.verify", verify_audit_chain))
        app.task(guarded("sgbus.audit.verify.start", verify_audit_chain_at_start))

    async def _register_with_retry(checks: list[IngestedCheck]) -> dict[str, IngestedCheck]:
        """The event id register is in the audit store: while it cannot be written, hold the
        batch (nothing sent, offsets not committed) and retry, as for OPA."""
        backoff = 0.1
        while True:
            try:
                assert svc.event_register is not None, "the ingest stage opens the register"
                return await asyncio.to_thread(svc.event_register.register_ingested, checks)
            except Exception as exc:  # the store's driver raises several types; described safely
                metrics.event_register_failed.inc()
                log.warning("event_register_unavailable_holding_batch", events=len(checks), retry_in_s=backoff,
                            cause=describe(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)

    async def _decide_with_retry(parsed: list[PseudonymisedEvent], ahead: ProbeAhead | None = None) -> RoutePlan:
        """Fail closed: while OPA cannot answer, share nothing and hold the batch (offsets are
        not committed), retrying with capped exponential backoff."""
        backoff = 0.1
        while True:
            try:
                checked_ahead, ahead = ahead, None  # its answer is for the first try only
                with metrics.policy_eval_seconds.time():
                    plan: RoutePlan = await svc.router.route_batch(parsed, checked_ahead)
                metrics.opa_up.set(1)
                for dec in plan.decisions[:1]:
                    metrics.revision_in_force(dec.revision)
                return plan
            except PolicyUnavailable as exc:
                metrics.opa_up.set(0)
                metrics.policy_retries.inc()
                log.warning("policy_unavailable_holding_batch", events=len(parsed), retry_in_s=backoff, cause=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)
            except RedactorUnavailable as exc:  # free text a decision asks redacted: fail closed, retry
                metrics.redaction_unavailable.inc()
                log.error("redactor_unavailable_holding_batch", events=len(parsed), retry_in_s=backoff, cause=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)
