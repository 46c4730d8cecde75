"""The ingest and route agents: ingress -> sg.events -> sg.deliver.<partner> + sg.audit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import faust
from pydantic import ValidationError

from bus import logs
from bus.exceptions import PolicyUnavailable
from bus.ingest import ingest
from bus.records import AuditRecord, PseudonymisedEvent
from bus.route import RoutePlan, delivery_latency_s
from bus.topics import AUDIT, DLQ, EVENTS, ingress_topic
from schemas.envelope import Agency

log = logs.get("sgbus.worker")


def register(app: faust.App, svc: Any) -> None:
    """Sends are not awaited for acknowledgement: Faust flushes the producer (at-least-once) or
    commits the Kafka transaction (exactly-once) before it commits the consumed offsets."""
    settings, metrics = svc.settings, svc.metrics

    def raw_topic(*names: str) -> faust.TopicT:
        # Bytes in, bytes out: pydantic (de)serialises our models, not Faust's codecs.
        return app.topic(*names, key_serializer="raw", value_serializer="raw")

    ingress = raw_topic(*[ingress_topic(a) for a in Agency])
    events = raw_topic(EVENTS)
    audit = raw_topic(AUDIT)
    dlq = raw_topic(DLQ)
    deliver_topics: dict[str, faust.TopicT] = {}

    def deliver_topic(name: str) -> faust.TopicT:
        if name not in deliver_topics:
            deliver_topics[name] = raw_topic(name)
        return deliver_topics[name]

    @app.agent(ingress, name="sgbus.ingest")
    async def ingest_agent(stream: faust.StreamT[bytes]) -> None:
        # One event at a time (ingest has nothing to batch); events() keeps each message's
        # topic and offset for the dead letter. (take_events never commits under exactly_once.)
        async for ev in stream.events():
            msg = ev.message
            out = ingest(ev.value, svc.keyring, topic=msg.topic, partition=msg.partition, offset=msg.offset)
            if out.event is not None:
                await events.send(key=out.event.subject_key.encode(), value=out.event.model_dump_json().encode())
                metrics.events_ingested.labels(out.event.source.agency.value, out.event.event_type).inc()
            elif out.dead_letter is not None:
                dl = out.dead_letter
                await dlq.send(key=str(dl.dlq_id).encode(), value=dl.model_dump_json().encode())
                code = dl.reasons[0]["code"] if dl.reasons else "unknown"
                metrics.events_rejected.labels(code).inc()
                metrics.dlq.labels(code).inc()
                log.warning("event_rejected", topic=dl.topic, offset=dl.offset, code=code,
                            field=dl.reasons[0]["field"] if dl.reasons else "$")

    @app.agent(events, name="sgbus.route")
    async def route_agent(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take(settings.batch_size, within=settings.batch_window_s):
            parsed: list[PseudonymisedEvent] = []
            for value in batch:
                try:
                    parsed.append(PseudonymisedEvent.model_validate_json(value))
                except ValidationError:
                    metrics.dlq.labels("malformed_internal").inc()
                    await dlq.send(value=b'{"stage":"route","reason":"malformed_internal"}')
            plan = await _decide_with_retry(parsed)
            for d in plan.deliveries:
                await deliver_topic(d.topic).send(key=d.key.encode(), value=d.event.model_dump_json().encode())
            for failed in plan.failed:
                metrics.dlq.labels("view_failed").inc()
                log.error("view_failed", recipient=failed.recipient, error=failed.error)
                await dlq.send(key=failed.event_id.encode(), value=json.dumps({
                    "stage": "route", "event_id": failed.event_id, "recipient": failed.recipient,
                    "reasons": [{"field": "$", "code": "view_failed", "message": failed.error}],
                }).encode())
            for rec in plan.audits:
                await audit.send(key=str(rec.event_id).encode(), value=rec.model_dump_json().encode())
            for d in plan.deliveries:
                metrics.deliveries.labels(d.event.recipient).inc()
                metrics.delivery_latency_seconds.observe(delivery_latency_s(d.event))
            for dec in plan.decisions:
                metrics.policy_decisions.labels("allow" if dec.allow else "deny", dec.agreement or "none").inc()
                if dec.override:
                    metrics.policy_overrides.labels(dec.agreement or "none").inc()
            metrics.audit_records.inc(len(plan.audits))

    @app.agent(audit, name="sgbus.audit", concurrency=1)
    async def audit_agent(stream: faust.StreamT[bytes]) -> None:
        """The single writer of the hash-chained audit store."""
        async for batch in stream.take(500, within=0.2):
            records = []
            for value in batch:
                try:
                    records.append(AuditRecord.model_validate_json(value))
                except ValidationError:
                    metrics.dlq.labels("malformed_audit").inc()
            added = await asyncio.to_thread(svc.audit_store.append, records, svc.keyring)
            metrics.audit_stored.inc(added)

    async def _decide_with_retry(parsed: list[PseudonymisedEvent]) -> RoutePlan:
        """Fail closed: while OPA cannot answer, share nothing and hold the batch (offsets are
        not committed), retrying with capped exponential backoff."""
        backoff = 0.1
        while True:
            try:
                with metrics.policy_eval_seconds.time():
                    plan: RoutePlan = await svc.router.route_batch(parsed)
                metrics.opa_up.set(1)
                for dec in plan.decisions[:1]:
                    metrics.policy_revision.labels(dec.revision).set(1)
                return plan
            except PolicyUnavailable as exc:
                metrics.opa_up.set(0)
                metrics.policy_retries.inc()
                log.warning("policy_unavailable_holding_batch", events=len(parsed), retry_in_s=backoff, cause=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.retry_max_backoff_s)
