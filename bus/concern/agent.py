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
from pydantic import ValidationError

from bus import logs
from bus.concern.decide import ConcernDecision
from bus.concern.picture import Picture, Report, concern_event_id, raise_payload, remember_raise
from bus.exceptions import PolicyUnavailable
from bus.pseudonymise.engine import KEY_KINDS, reveal_subject
from bus.pseudonymise.operators.token import token
from bus.records import PseudonymisedEvent
from bus.topics import EVENTS_PARTITIONS
from schemas.envelope import Agency
from schemas.registry import base_type, parse_event_dict

log = logs.get("sgbus.concern")
TABLE = "concern"
CONCERN_TYPE = "bus.multi_agency_concern.v1"

Send = Callable[[faust.TopicT, bytes | None, bytes, TP], Awaitable[None]]
Sign = Callable[[dict[str, Any]], dict[str, Any]]


def changelog_topic_name(app_id: str) -> str:
    """Faust's name for the table's changelog (the stage creates it: bus/worker.py)."""
    return f"{app_id}-{TABLE}-changelog"


def mash_key(subject: dict[str, Any], domain: str, keyring: Any) -> str | None:
    """The child's token in the concern's linkage domain, from the first identifier the subject has
    (in the order sg.events is partitioned by, so one child's events and picture share a partition)."""
    ids = subject.get("identifiers") or {}
    for kind in KEY_KINDS:
        if ids.get(kind):
            return token(keyring, domain, kind, str(ids[kind]))
    return None


def concern_event(key: str, rule: str, payload: dict[str, Any], subject: dict[str, Any], org_id: str,
                  ) -> dict[str, Any]:
    """The event as its source (the bus) publishes it. Every field derives from the picture, so a
    replayed batch raises the very same event (same id, same content: ingest drops the repeat)."""
    at = payload["last_at"]
    return {"event_id": concern_event_id(key, rule, payload["raised"]), "event_type": CONCERN_TYPE,
            "source": {"agency": Agency.BUS.value, "org_id": org_id}, "occurred_at": at, "recorded_at": at,
            "subject": subject, "classification": "OFFICIAL-SENSITIVE", "payload": payload}


def register_concern(app: faust.App, svc: Any, send: Send, events: faust.TopicT, ingress_bus: faust.TopicT,
                     sign: Sign, commit_batch: Callable[[list[Any]], Awaitable[None]]) -> None:
    settings, metrics = svc.settings, svc.metrics
    # Keys: the child's MASH-domain token; values: the picture as JSON text (Faust's json codec).
    table = app.Table(TABLE, default=None, partitions=EVENTS_PARTITIONS, key_type=str, value_type=str)

    async def decide(children: list[dict[str, Any]], rule_ids: list[str]) -> list[ConcernDecision]:
        """Fail closed: while OPA cannot answer, raise nothing and hold the batch."""
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
                rule_ids = [r.id for r in concern.rules] if concern else rule_ids
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)

    async def concern_agent(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(  # type: ignore[attr-defined]  # on Stream, not StreamT
                settings.batch_size, within=settings.batch_window_s):
            concern = svc.router.partnership.concern
            if concern is not None:
                await handle(batch, concern)
            await commit_batch(batch)

    async def handle(batch: list[faust.EventT[bytes]], concern: Any) -> None:
        now = int(time.time())
        keyring = svc.keyring
        touched: dict[str, tuple[Picture, TP, dict[str, Any]]] = {}
        for ev in batch:
            try:
                event = PseudonymisedEvent.model_validate_json(ev.value)
            except ValidationError:
                continue  # the route stage dead-letters it
            if event.source.agency == Agency.BUS:
                continue  # what the bus raised is not a report about the child
            try:
                subject = reveal_subject(event, keyring)
            except Exception as exc:  # a key no longer held: the child cannot be placed
                log.error("concern_subject_unreadable", error=type(exc).__name__)
                continue
            key = mash_key(subject, concern.linkage_domain, keyring)
            if key is None:
                continue  # no identifier to link by (e.g. an unborn child known by name only)
            held = touched.get(key)
            picture = held[0] if held else Picture.from_bytes(table.data.get(key))
            picture.add(Report(str(event.ingest_id), event.source.agency.value, base_type(event.event_type),
                               int(event.occurred_at.timestamp())))
            picture.prune(now, concern.window_days)
            touched[key] = (picture, ev.message.tp, subject)
        if not touched:
            return
        rule_ids = [r.id for r in concern.rules]
        windows = {r.id: r.window_days for r in concern.rules}
        decisions = await decide([p.opa_child(k, now) for k, (p, _, _) in touched.items()], rule_ids)
        for d in decisions:
            picture, tp, subject = touched[d.key]
            if not d.crossed:
                picture.raised.pop(d.rule, None)  # below the threshold again: a later crossing raises anew
                continue
            if not d.raise_:
                continue
            payload = raise_payload(picture, d.rule, windows.get(d.rule, concern.window_days), now)
            raised = sign(concern_event(d.key, d.rule, payload, subject, settings.concern_org_id))
            await send(ingress_bus, parse_event_dict(raised).partition_key(), json.dumps(raised).encode(), tp)
            remember_raise(picture, d.rule, payload)
            metrics.concerns_raised.labels(d.rule).inc()
            log.info("concern_raised", rule=d.rule, raised=payload["raised"], agencies=len(payload["agencies"]))
        for key, (picture, tp, _) in touched.items():
            text = picture.to_bytes().decode()
            # Written to the changelog partition of the child's own events (its sg.events partition),
            # so the worker that owns those events recovers this picture after a restart.
            table.data[key] = text
            table.send_changelog(tp.partition, key, text)
        metrics.concern_children.set(len(table.data))
        metrics.concern_last_at.set(datetime.now(UTC).timestamp())

    app.agent(events, name="sgbus.concern")(concern_agent)
