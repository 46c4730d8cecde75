"""The concern agent: keeps each child's picture in a Faust table (changelog in Kafka) and raises
bus.multi_agency_concern.v1 when Rego says a threshold is crossed. A thin loop over pure parts
(bus/concern/picture.py) and one batched OPA query per batch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP
from mode import CrashingSupervisor
from pydantic import ValidationError

from bus import logs
from bus.agents.batching import take_ready
from bus.agents.guard import guarded
from bus.concern.decide import ConcernDecision
from bus.concern.entitlement import CONCERN_TYPE, concern_recipients, may_count, own_sources
from bus.concern.picture import Picture, Report, concern_event_id, raise_payload, remember_raise, sweep
from bus.exceptions import PolicyUnavailable
from bus.policy.data import Partnership
from bus.pseudonymise.engine import KEY_KINDS, reveal_subject
from bus.pseudonymise.operators.token import token
from bus.records import PseudonymisedEvent
from bus.topics import EVENTS, EVENTS_PARTITIONS
from schemas.envelope import Agency
from schemas.registry import base_type, parse_event_dict

log = logs.get("sgbus.concern")
TABLE = "concern"
#: how often a concern stage re-reads the partnership (rules, recipients) from OPA
REFRESH_S = 30.0
#: how often every picture is pruned to the window and the empty ones deleted
SWEEP_S = 3600.0

Send = Callable[[faust.TopicT, bytes | None, bytes, TP], Awaitable[Any]]
Sign = Callable[[dict[str, Any]], dict[str, Any]]


def changelog_topic_name(app_id: str) -> str:
    """Faust's name for the table's changelog (the stage creates it: bus/worker.py)."""
    return f"{app_id}-{TABLE}-changelog"


def key_identifier(subject: dict[str, Any]) -> tuple[str, str] | None:
    """The identifier a child is linked by: the first the subject has, in the order sg.events is
    partitioned by (so one child's events and picture share a partition)."""
    ids = subject.get("identifiers") or {}
    for kind in KEY_KINDS:
        if ids.get(kind):
            return kind, str(ids[kind])
    return None


def mash_key(subject: dict[str, Any], domain: str, keyring: Any) -> str | None:
    """The child's token in the concern's linkage domain (never a raw identifier)."""
    found = key_identifier(subject)
    return token(keyring, domain, *found) if found else None


def countable(partnership: Partnership) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
    """A first, cheap screen of what may count in a picture: ((agency, org_id, event type without
    version) some agreement shares with a concern recipient, (agency, org_id) of the recipients
    themselves: their own events). Policy then decides each event that passes (`entitled`): the
    screen knows nothing of an agreement's conditions, dates or event versions."""
    recipients = concern_recipients(partnership)
    shared: set[tuple[str, str, str]] = set()
    for a in partnership.agreements:
        if CONCERN_TYPE in a.event_types or not recipients & set(a.recipients):
            continue
        for provider in a.providers:
            partner = partnership.partner(provider)
            if partner is not None:
                shared |= {(partner.agency.value, partner.org_id, base_type(t)) for t in a.event_types}
    own = {(p.agency.value, p.org_id) for p in partnership.partners if p.id in recipients}
    return shared, own


def concern_event(key: str, rule: str, payload: dict[str, Any], identifier: tuple[str, str], org_id: str,
                  ) -> dict[str, Any]:
    """The event as its source (the bus) publishes it. Its subject is the one identifier the child
    is linked by (sealed and tokenised at ingest like any): no name, no date of birth, nothing else
    a partner sent. Every field derives from the picture, so a replayed batch raises the very
    same event (same id, same content: ingest drops the repeat)."""
    at = payload["last_at"]
    kind, value = identifier
    return {"event_id": concern_event_id(key, rule, payload["raised"], payload["first_at"]),
            "event_type": CONCERN_TYPE,
            "source": {"agency": Agency.BUS.value, "org_id": org_id}, "occurred_at": at, "recorded_at": at,
            "subject": {"identifiers": {kind: value}}, "classification": "OFFICIAL-SENSITIVE", "payload": payload}


class ConcernCounter:
    """Counts each batch of sg.events into the children's pictures and raises what crosses."""

    def __init__(self, app: faust.App, svc: Any, send: Send, ingress_bus: faust.TopicT, sign: Sign) -> None:
        self.app, self.svc, self.send, self.ingress_bus, self.sign = app, svc, send, ingress_bus, sign
        # Keys: the child's MASH-domain token; values: the picture as JSON text (Faust's json codec).
        self.table = app.Table(TABLE, default=None, partitions=EVENTS_PARTITIONS, key_type=str, value_type=str)
        self.refreshed = time.monotonic()

    async def count(self, batch: list[faust.EventT[bytes]]) -> None:
        """Never raises but PolicyUnavailable (held, like sharing): one batch's failure is counted
        and said, and sharing goes on."""
        svc = self.svc
        if time.monotonic() - self.refreshed > REFRESH_S:  # a concern stage alone has no route to re-pin it
            await svc.router.refresh()
            self.refreshed = time.monotonic()
        partnership = svc.router.partnership
        if partnership.concern is None:
            return
        try:
            await self.handle(batch, partnership)
        except PolicyUnavailable:
            raise
        except Exception as exc:
            # One bad batch must not stop the concern stage: it is left uncounted, said
            # loudly, and the stage carries on.
            svc.metrics.concern_failures.inc()
            log.error("concern_batch_failed", events=len(batch), error=type(exc).__name__)

    async def decide(self, children: list[dict[str, Any]], rule_ids: list[str]) -> list[ConcernDecision]:
        """Fail closed: while OPA cannot answer, raise nothing and hold the batch."""
        svc, metrics = self.svc, self.svc.metrics
        backoff = 0.1
        while True:
            try:
                decisions: list[ConcernDecision] = await svc.router.policy.concern_decisions(children, rule_ids)
                metrics.opa_up.set(1)
                return decisions
            except PolicyUnavailable as exc:
                metrics.opa_up.set(0)
                metrics.policy_retries.inc()
                log.warning("concern_policy_unavailable_holding_batch", children=len(children), cause=str(exc))
                await svc.router.refresh()  # new rules after a reload: ask with their ids
                concern = svc.router.partnership.concern
                if concern is None:
                    return []  # the reload removed the concern rules: nothing to decide
                rule_ids = [r.id for r in concern.rules]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, svc.settings.retry_max_backoff_s)

    async def entitled(self, events: list[PseudonymisedEvent]) -> list[PseudonymisedEvent]:
        """The events every concern recipient may hear of now: each is a recipient's own, or
        policy would send it to that recipient today (its agreement's conditions, dates and event
        versions, as routing decides). One concern goes to every recipient, so an event counts
        only if none of them is refused it. Fail closed: while OPA cannot answer, hold the batch."""
        svc, metrics = self.svc, self.svc.metrics
        backoff = 0.1
        while True:
            partnership = svc.router.partnership
            recipients = concern_recipients(partnership)
            if not recipients:
                return []  # no agreement sends a concern: nothing counts
            own = own_sources(partnership, recipients)
            try:
                allowed = await svc.router.allowed_to(events, recipients)
                metrics.opa_up.set(1)
                break
            except PolicyUnavailable as exc:
                metrics.opa_up.set(0)
                metrics.policy_retries.inc()
                log.warning("concern_policy_unavailable_holding_batch", events=len(events), cause=str(exc))
                await svc.router.refresh()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, svc.settings.retry_max_backoff_s)
        return [e for e, ok in zip(events, allowed, strict=True)
                if may_count((e.source.agency.value, e.source.org_id), ok, recipients, own)]

    async def handle(self, batch: list[faust.EventT[bytes]], partnership: Partnership) -> None:
        svc, table = self.svc, self.table
        settings, metrics = svc.settings, svc.metrics
        concern = partnership.concern
        assert concern is not None
        shared, own = countable(partnership)
        now = int(time.time())
        keyring = svc.keyring
        touched: dict[str, tuple[Picture, TP, tuple[str, str]]] = {}
        screened: list[tuple[PseudonymisedEvent, TP]] = []
        for ev in batch:
            try:
                event = PseudonymisedEvent.model_validate_json(ev.value)
            except ValidationError:
                continue  # the route stage dead-letters it
            if event.source.agency == Agency.BUS:
                continue  # what the bus raised is not a report about the child
            source = (event.source.agency.value, event.source.org_id)
            if (*source, base_type(event.event_type)) not in shared and source not in own:
                continue  # no agreement could send it to the MASH: not worth asking policy
            screened.append((event, ev.message.tp))
        if not screened:
            return
        counted = {id(e) for e in await self.entitled([e for e, _ in screened])}
        for event, tp in screened:
            if id(event) not in counted:
                continue  # the MASH may not hear of it, so it does not count
            try:
                subject = reveal_subject(event, keyring)
            except Exception as exc:  # a key no longer held: the child cannot be placed
                log.error("concern_subject_unreadable", error=type(exc).__name__)
                continue
            identifier = key_identifier(subject)
            if identifier is None:
                continue  # no identifier to link by (e.g. an unborn child known by name only)
            key = token(keyring, concern.linkage_domain, *identifier)
            held = touched.get(key)
            picture = held[0] if held else Picture.from_bytes(table.data.get(key))
            picture.add(Report(str(event.ingest_id), event.source.agency.value, base_type(event.event_type),
                               int(event.occurred_at.timestamp())))
            picture.prune(now, concern.window_days)
            touched[key] = (picture, tp, identifier)
        if not touched:
            return
        rule_ids = [r.id for r in concern.rules]
        windows = {r.id: r.window_days for r in concern.rules}
        decisions = await self.decide([p.opa_child(k, now) for k, (p, _, _) in touched.items()], rule_ids)
        for d in decisions:
            picture, tp, identifier = touched[d.key]
            if not d.crossed:
                picture.rearm(d.rule)  # below the threshold again: a later crossing raises anew
                continue
            if not d.raise_:
                continue
            try:
                payload = raise_payload(picture, d.rule, windows.get(d.rule, concern.window_days), now)
                if payload is None:
                    continue
                raised = self.sign(concern_event(d.key, d.rule, payload, identifier, settings.concern_org_id))
                key_bytes = parse_event_dict(raised).partition_key()
            except Exception as exc:  # one child's concern cannot be built: the others still go
                metrics.concern_failures.inc()
                log.error("concern_not_built", rule=d.rule, error=type(exc).__name__)
                continue
            await self.send(self.ingress_bus, key_bytes, json.dumps(raised).encode(), tp)
            remember_raise(picture, d.rule, payload)
            metrics.concerns_raised.labels(d.rule).inc()
            log.info("concern_raised", rule=d.rule, raised=payload["raised"], agencies=len(payload["agencies"]))
        for key, (picture, tp, _) in touched.items():
            # Written to the changelog partition of the child's own events (its sg.events partition),
            # so the worker that owns those events recovers this picture after a restart.
            picture.partition = tp.partition
            self.write(key, picture)
        metrics.concern_children.set(len(table.data))
        metrics.concern_last_at.set(datetime.now(UTC).timestamp())

    def write(self, key: str, picture: Picture) -> None:
        """The picture to the table and its changelog partition; an empty one is deleted (a
        tombstone, which compaction then removes with every earlier version)."""
        table = self.table
        if picture.empty:
            table.data.pop(key, None)
            table.send_changelog(picture.partition, key, None, value_serializer="raw")
            return
        text = picture.to_bytes().decode()
        table.data[key] = text
        table.send_changelog(picture.partition, key, text)

    async def sweep(self) -> None:
        """Prune every picture to the window, delete the empty ones: a child no new event is about
        is not kept for ever. A picture whose partition is not known (written before it was
        recorded, and not recovered from the changelog since) is left until it is next touched."""
        svc, app = self.svc, self.app
        concern = svc.router.partnership.concern
        if concern is None or app.rebalancing or app.in_recovery:
            return  # the table may be half recovered, or about to change hands: next time
        # Only the pictures of partitions this worker owns now: the store also holds standby
        # copies and, after a rebalance, pictures another worker now writes.
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == EVENTS}
        changed, unreadable = sweep(dict(self.table.data), int(time.time()), concern.window_days)
        if unreadable:
            log.error("concern_pictures_unreadable", pictures=unreadable)
        # Pictures written before their partition was recorded: the partition Faust recovered them from.
        recovered: dict[str, int] = getattr(self.table.data, "_key_partition", {})
        pruned = deleted = 0
        for key, picture in changed.items():
            if picture.partition is None:
                picture.partition = recovered.get(key)
            if picture.partition is None or picture.partition not in owned:
                continue
            self.write(key, picture)
            deleted += picture.empty
            pruned += not picture.empty
        svc.metrics.concern_children.set(len(self.table.data))
        if pruned or deleted:
            log.info("concern_pictures_swept", pruned=pruned, deleted=deleted)


def register_concern_agent(app: faust.App, counter: ConcernCounter, events: faust.TopicT,
                           commit_batch: Callable[[list[Any]], Awaitable[None]]) -> None:
    """The concern stage (`worker --stage concern`), always a Faust app of its own: a table's
    recovery and flow control in the sharing pipe's app left one ingress partition unfetched
    under load (10,000 events, seen twice), so sharing never waits on the concern."""
    settings = counter.svc.settings

    async def concern_agent(stream: faust.StreamT[bytes]) -> None:
        # Not on any partner's clock: full windows, fewer table updates and raises per second.
        async for batch in take_ready(stream, settings.batch_size, settings.batch_window_s,
                                      min_window_s=settings.batch_window_s):
            await counter.count(batch)
            await commit_batch(batch)

    # As the pipeline's agents (bus/agents/pipeline.py): an unhandled error stops the worker
    # rather than Faust restarting the agent past the batch it had taken, by its type only.
    app.agent(events, name="sgbus.concern", supervisor_strategy=CrashingSupervisor)(
        guarded("sgbus.concern", concern_agent))
    # Pictures no new event touches are pruned and let go here (on_leader=False: each concern
    # worker sweeps the pictures of its own partitions).
    app.timer(SWEEP_S, name="sgbus.concern.sweep")(guarded("sgbus.concern.sweep", counter.sweep))
