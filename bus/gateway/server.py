"""The gateway's HTTPS server (aiohttp: the handler sees the TLS peer certificate, which
uvicorn does not hand to an ASGI app). Thin handlers over publish/mailbox/tracking."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from confluent_kafka import KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from pydantic import BaseModel, ValidationError

from bus import logs
from bus.exceptions import PolicyUnavailable
from bus.gateway.identity import PartnerCerts
from bus.gateway.mailbox import BadCursor, Mailbox, MailboxBusy, MailboxUnavailable, mailbox_group
from bus.gateway.models import (
    MAX_BATCH,
    MAX_WAIT_S,
    AckRequest,
    AckResult,
    BatchItem,
    BatchRequest,
    BatchResult,
    FieldProblem,
    Health,
    MailboxItem,
    MailboxPage,
    Problem,
    Receipt,
)
from bus.gateway.publish import Accepted, Refused, check_event
from bus.gateway.ratelimit import RateLimiter
from bus.gateway.receipts import ReceiptStore, StoredReceipt
from bus.gateway.state import state_path
from bus.gateway.tracking import DeadLetterFollower, event_status
from bus.metrics import LATENCY_BUCKETS
from bus.ops import targets
from bus.ops.lag import Group, LagCollector
from bus.ops.serve import serve_metrics
from bus.policy.data import Partner, Partnership
from bus.policy.loader import fetch_policy_state
from bus.security.kafka_access import KafkaAccess
from bus.security.opa_auth import OpaAccess
from bus.security.pki import LOCAL_HOSTS, Issued, PartnershipCA, ca_path
from bus.settings import Settings
from bus.topics import deliver_topic
from schemas.registry import MAX_EVENT_BYTES, _field_path

log = logs.get("sgbus.gateway")
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://sgbus.example/problems/"
#: a whole batch: 500 events, most far below the per-event limit
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: JSON values a batch may hold (objects, arrays, members: counted from its commas and brackets,
#: before any is built). A real event has 20-30; parsed, each costs ~60 bytes or more, and a
#: body of empty objects would otherwise take ~24x its size in memory.
MAX_BATCH_VALUES = 400 * MAX_BATCH
#: batches one partner may have in flight (read, parsed, published) at once
BATCHES_IN_FLIGHT = 2
#: batches parsed at once, whoever sends them
BATCH_PARSES = 2
#: seconds an idle keep-alive connection (or one that has not finished its request line and
#: headers) is kept; aiohttp's default is an hour
KEEPALIVE_TIMEOUT_S = 75.0
GATEWAY_SERVER_CERT = "gateway"
#: mailbox reads, acknowledgements and status look-ups a partner may make a second (bursts of twice that)
READS_PER_S = 20


class ProblemError(Exception):
    def __init__(self, status: int, code: str, title: str, errors: list[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(code)
        self.problem = Problem(type=PROBLEM_BASE + code, title=title, status=status, code=code,
                               errors=errors or [], detail=detail)
        self.headers = headers or {}


def field_problem(field: str, code: str, message: str) -> list[FieldProblem]:
    return [FieldProblem(field=field, code=code, message=message)]


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json(exclude_none=True), status=status,
                        content_type="application/json")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=problem.model_dump_json(exclude_none=True), status=problem.status,
                        content_type=PROBLEM_JSON, headers=headers)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("sgbus_gateway_requests_total", "Gateway requests", ["route", "status", "partner"],
                                registry=r)
        self.latency = Histogram("sgbus_gateway_request_seconds", "Gateway request time", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("sgbus_gateway_rejected_total", "Requests or events refused", ["reason"], registry=r)
        self.published = Counter("sgbus_gateway_events_published_total", "Events handed to the bus",
                                 ["partner"], registry=r)


class PolicyState:
    """Partnership data and signing key register from the policy bundle OPA serves (as the
    workers use them), re-read every `refresh_s` and on an unknown key (at most every 2 s)."""

    def __init__(self, opa: OpaAccess, refresh_s: float = 30.0, max_stale_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.opa, self.refresh_s, self.max_stale_s, self.clock = opa, refresh_s, max_stale_s, clock
        self.state: tuple[Partnership, Any] | None = None
        self._at = 0.0  # the last attempt
        self._fresh_at = 0.0  # the last answer
        self._lock = threading.Lock()

    def due(self, *, unknown_key: bool = False) -> bool:
        age = self.clock() - self._at
        return self.state is None or age >= self.refresh_s or (unknown_key and age >= 2.0)

    def get(self, *, unknown_key: bool = False) -> tuple[Partnership, Any]:
        """The partnership and signers; PolicyUnavailable when OPA has not answered for
        `max_stale_s` (a removed partner or a revoked signing key must not pass for ever)."""
        with self._lock:
            if self.due(unknown_key=unknown_key):
                self._at = self.clock()
                try:
                    partnership, _revision, signers = fetch_policy_state(self.opa)
                    self.state, self._fresh_at = (partnership, signers), self._at
                except PolicyUnavailable:
                    if self.state is None:
                        raise
            if self.state is None or self.stale():  # checked on every call, not only at a refresh
                raise PolicyUnavailable("the policy data has not been refreshed from OPA for too long")
            return self.state

    def stale(self) -> bool:
        """The last answer from OPA is older than `max_stale_s`."""
        return self.clock() - self._fresh_at > self.max_stale_s


def partner_of_mailbox(group: Group) -> str:
    """The partner whose mailbox a watched group is (its topic is sg.deliver.<partner>)."""
    return (group.topic or "").removeprefix(deliver_topic(""))


def reports_mailbox_lag(partnership: Partnership | None, partner_id: str, *, in_use: bool) -> bool:
    """Whether a partner's mailbox lag is reported (and so can raise SgbusPartnerNotCollecting):
    yes unless its partnership entry says it collects through a delivery connector or its own
    consumer and it has not used the mailbox since the gateway started. Until the policy data
    is known, and for a partner no longer in it, yes: an alert too many, never one too few."""
    if in_use or partnership is None:
        return True
    partner = partnership.partner(partner_id)
    return partner is None or partner.delivery.collected_by == "mailbox"


class Gateway:
    """Everything the handlers use, built once per process."""

    def __init__(self, home: Path, kafka: KafkaAccess, opa: OpaAccess, *, rate: float, burst: float,
                 audit_lookup: Callable[[str], list[dict[str, Any]]], partner_certs: Path | None = None,
                 receipts_dir: Path | None = None) -> None:
        self.home = home
        self.kafka = kafka
        self.policy = PolicyState(opa)
        self.certs = PartnerCerts(home, partner_certs)
        # Lag of each partner's mailbox (sg.deliver.<partner> not yet acknowledged): every partner
        # holding a gateway certificate is watched from the start, unless its partnership entry
        # says it collects another way (a certificate may be for publishing only).
        self.lag = LagCollector(kafka, [Group("mailbox", mailbox_group(p), deliver_topic(p))
                                        for p in sorted({c.partner for c in self.certs.all() if not c.revoked})],
                                keep=self._reports_mailbox_lag)
        self.limiter = RateLimiter(rate, burst)
        #: mailbox reads, acknowledgements and status look-ups, per partner
        self.read_limiter = RateLimiter(READS_PER_S, 2 * READS_PER_S)
        # Blocking work (Kafka reads, SQLite, the audit store) runs here, not in the default
        # executor, so one partner's long polls cannot hold up policy refreshes.
        self.io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-io")
        # Mailbox long polls (up to MAX_WAIT_S each) and status look-ups (the audit store, which
        # can be slow or down) have pools of their own: neither can take the threads publishing
        # needs, whoever sends them.
        self.polls = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-poll")
        self.lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-status")
        self.metrics = GatewayMetrics()
        self.store = ReceiptStore(receipts_dir or home / "gateway")
        self.batches_in_flight: dict[str, int] = {}
        self.batch_parses = asyncio.Semaphore(BATCH_PARSES)
        self._health_check: asyncio.Future[bool] | None = None  # the one broker round trip in flight
        self.audit_lookup = audit_lookup
        self.mailboxes: dict[str, Mailbox] = {}
        self._mailbox_lock = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.producer = Producer(kafka.librdkafka_producer(**{
            "enable.idempotence": True, "acks": "all", "linger.ms": 2, "message.timeout.ms": 20000,
            "log_level": 3}))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self.follower = DeadLetterFollower(kafka, self.store)
        self.health: tuple[float, bool] = (-1e9, False)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._poller.start()
        self.follower.start()

    def close(self) -> None:
        self.producer.flush(10)
        self._stop.set()
        self.follower.stop()
        self.follower.join(5)
        self._poller.join(5)
        for pool in (self.io, self.polls, self.lookups):
            pool.shutdown(wait=True, cancel_futures=True)
        for mailbox in self.mailboxes.values():
            mailbox.close()
        self.store.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _reports_mailbox_lag(self, group: Group) -> bool:
        state = self.policy.state  # read as it is: a lag read never waits on OPA
        return reports_mailbox_lag(state[0] if state is not None else None, partner_of_mailbox(group),
                                   in_use=partner_of_mailbox(group) in self.mailboxes)

    # -- services ---------------------------------------------------------------------------
    def mailbox(self, partner_id: str) -> Mailbox:
        with self._mailbox_lock:
            if partner_id not in self.mailboxes:
                self.mailboxes[partner_id] = Mailbox(self.kafka, partner_id)
                self.lag.watch(Group("mailbox", mailbox_group(partner_id), deliver_topic(partner_id)))
            return self.mailboxes[partner_id]

    async def run_io(self, fn: Callable[..., Any], *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool or self.io, functools.partial(fn, *args))

    def lock_for(self, event_id: str) -> asyncio.Lock:
        lock = self._locks.get(event_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[event_id] = lock
        return lock

    def enqueue(self, accepted: Accepted) -> asyncio.Future[tuple[int, int, int]]:
        """Hand one event to Kafka now (events enqueued one after another keep their order);
        the future gives (partition, offset, timestamp ms) once the broker has it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int, int]] = loop.create_future()

        def settle(err: Any, msg: Any) -> None:
            if err is not None:
                result: Any = ProblemError(503, "bus_unavailable", "The bus could not take the event now",
                                           headers={"Retry-After": "5"})
            else:
                result = (int(msg.partition()), int(msg.offset()), int(msg.timestamp()[1]))
            loop.call_soon_threadsafe(_settle, done, result)

        try:
            self.producer.produce(accepted.topic, key=accepted.key, value=accepted.value, on_delivery=settle)
        except (BufferError, KafkaException):
            done.set_exception(ProblemError(503, "bus_unavailable", "The bus could not take the event now",
                                            headers={"Retry-After": "5"}))
        return done


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


# -- middleware ---------------------------------------------------------------------------
def _route_name(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return str(getattr(resource, "canonical", "unmatched")) if resource is not None else "unmatched"


@web.middleware
async def problems(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                   ) -> web.StreamResponse:
    """Every error as RFC 9457 problem+json; metrics for every request."""
    gw = request.app[GATEWAY_KEY]
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ProblemError as exc:
        gw.metrics.rejected.labels(exc.problem.code).inc()
        response = problem_response(exc.problem, exc.headers)
    except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 ...
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        gw.metrics.rejected.labels(code).inc()
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = problem_response(Problem(type=PROBLEM_BASE + code, title=exc.reason, status=exc.status,
                                            code=code), headers)
    except Exception as exc:  # a bug: never the request's content in the log
        log.error("gateway_error", route=_route_name(request), error=type(exc).__name__)
        gw.metrics.rejected.labels("internal_error").inc()
        response = problem_response(Problem(type=PROBLEM_BASE + "internal_error", title="Internal error",
                                            status=500, code="internal_error"))
    route = _route_name(request)
    gw.metrics.requests.labels(route, str(response.status), request.get("partner", "none")).inc()
    gw.metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


async def authenticated(request: web.Request) -> Partner:
    """The partner whose registered certificate the TLS client presented; 401 otherwise."""
    gw = request.app[GATEWAY_KEY]
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise ProblemError(401, "no_client_certificate", "A partner client certificate is required")
    partner_id = gw.certs.partner_for(der)
    partner = (await _policy(gw))[0].partner(partner_id) if partner_id is not None else None
    if partner is None:
        raise ProblemError(401, "unknown_client_certificate",
                           "The client certificate is not registered to a partner (or was revoked)")
    request["partner"] = partner.id
    return partner


async def _policy(gw: Gateway, *, unknown_key: bool = False) -> tuple[Partnership, Any]:
    """The policy state; read from OPA off the event loop when due (every 30 s)."""
    state = gw.policy.state
    if state is not None and not gw.policy.due(unknown_key=unknown_key) and not gw.policy.stale():
        return state
    try:
        return await asyncio.to_thread(gw.policy.get, unknown_key=unknown_key)
    except PolicyUnavailable:
        raise ProblemError(503, "policy_unavailable", "The partnership's policy data is not available yet",
                           headers={"Retry-After": "5"}) from None


def _rate(gw: Gateway, partner: Partner, cost: int, *, reads: bool = False) -> None:
    wait = (gw.read_limiter if reads else gw.limiter).take(partner.id, cost)
    if wait > 0:
        raise ProblemError(429, "rate_limited", "Too many events; retry after the time given",
                           headers={"Retry-After": RateLimiter.retry_after(wait)})


def _json_body(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise ProblemError(415, "unsupported_media_type", "Send application/json")


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ProblemError(413, "too_large", "The body is too large", detail=f"the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # never more than the limit in memory
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "too_large", "The body is too large", detail=f"the limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_problem(exc: ValidationError) -> list[FieldProblem]:
    out = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False):
        # a key the caller made up is shown as <unknown>, as for events: it could be anything
        out.append(FieldProblem(field=_field_path(e["loc"], e["type"]) or "$", code=e["type"], message=e["msg"]))
    return out


# -- handlers -----------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    at, ok = gw.health
    if time.monotonic() - at > 1.0:  # an open endpoint: at most one broker round trip a second
        if gw._health_check is None:  # ...and one at a time, however many probes arrive meanwhile
            gw._health_check = asyncio.ensure_future(_kafka_reachable(gw))
        check = gw._health_check
        ok = await asyncio.shield(check)
    return json_response(Health(status="ok" if ok else "degraded", kafka=ok))


async def _kafka_reachable(gw: Gateway) -> bool:
    try:
        await asyncio.to_thread(gw.producer.list_topics, timeout=2)
        ok = True
    except KafkaException:
        ok = False
    finally:  # whatever happened, the next probe asks again
        gw._health_check = None
    gw.health = (time.monotonic(), ok)
    return ok


@functools.cache
def _openapi_body() -> bytes:
    from bus.gateway.openapi import render

    return render().encode()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_openapi_body(), content_type="application/json")


Outcome = tuple[int, Receipt | None, Problem | None]


def _internal_error() -> Outcome:
    return 500, None, Problem(type=PROBLEM_BASE + "internal_error", title="Internal error", status=500,
                              code="internal_error")


def _duplicate() -> Outcome:
    return 409, None, Problem(type=PROBLEM_BASE + "duplicate_event_id", status=409, code="duplicate_event_id",
                              title="An event with this id but other content was already published",
                              errors=field_problem("event_id", "duplicate_event_id",
                                                   "event ids must be unique; a retry must be identical"))


def _receipt_of(stored: StoredReceipt) -> Outcome:
    return 202, Receipt(event_id=uuid.UUID(stored.event_id), topic=stored.topic, partition=stored.partition,
                        offset=stored.offset, received_at=stored.received_at), None


async def _publish(gw: Gateway, partner: Partner, raws: list[bytes]) -> list[Outcome]:
    """Check and publish events in the order given (one child's events stay in order); each
    gets the status a publish of it alone would have. Never raises for one event's sake."""
    try:
        return await _publish_checked(gw, partner, raws)
    except ProblemError as exc:
        return [(exc.problem.status, None, exc.problem)] * len(raws)
    except Exception as exc:  # a bug: never the events' content in the log
        log.error("publish_error", error=type(exc).__name__)
        return [_internal_error()] * len(raws)


def _check_all(raws: list[bytes], partner: Partner, signers: Any) -> list[Accepted | Refused]:
    out: list[Accepted | Refused] = []
    for raw in raws:
        try:
            out.append(check_event(raw, partner, signers))
        except Exception as exc:  # a bug costs this event only
            log.error("check_error", error=type(exc).__name__)
            out.append(Refused(500, "internal_error", "Internal error"))
    return out


async def _publish_checked(gw: Gateway, partner: Partner, raws: list[bytes]) -> list[Outcome]:
    _partnership, signers = await _policy(gw)
    outcomes = await asyncio.to_thread(_check_all, raws, partner, signers)
    retry = [i for i, o in enumerate(outcomes) if isinstance(o, Refused) and o.unknown_key]
    if retry:  # a key registered since we last looked
        _partnership, signers = await _policy(gw, unknown_key=True)
        for i, again in zip(retry, await asyncio.to_thread(_check_all, [raws[i] for i in retry], partner, signers),
                            strict=True):
            outcomes[i] = again
    results: list[Outcome | None] = [None] * len(raws)
    accepted: list[tuple[int, Accepted]] = []
    for i, o in enumerate(outcomes):
        if isinstance(o, Refused):
            gw.metrics.rejected.labels(o.code).inc()
            results[i] = (o.status, None, Problem(type=PROBLEM_BASE + o.code, title=o.title, status=o.status,
                                                  code=o.code, errors=o.errors))
        else:
            accepted.append((i, o))
    async with contextlib.AsyncExitStack() as held:
        # Every id of the batch locked (in one order, so two batches cannot wait on each other):
        # a retry racing its original waits for the first receipt.
        for key in sorted({f"{partner.id}/{o.event_id}" for _, o in accepted}):
            await held.enter_async_context(gw.lock_for(key))
        stored = await gw.run_io(lambda: {o.event_id: gw.store.get(partner.id, o.event_id) for _, o in accepted})
        sent: dict[str, tuple[Accepted, asyncio.Future[tuple[int, int, int]]]] = {}
        waiting: list[tuple[int, Accepted]] = []
        for i, o in accepted:
            earlier = stored.get(o.event_id)
            if earlier is not None:
                results[i] = _receipt_of(earlier) if earlier.content_sha256 == o.content_sha256 else _duplicate()
            elif o.event_id in sent:  # twice in one batch
                if sent[o.event_id][0].content_sha256 == o.content_sha256:
                    waiting.append((i, o))
                else:
                    results[i] = _duplicate()
            else:
                sent[o.event_id] = (o, gw.enqueue(o))
                waiting.append((i, o))
        receipts: dict[str, StoredReceipt] = {}
        for event_id, (o, future) in sent.items():
            try:
                partition, offset, ts = await future
            except ProblemError:
                continue
            receipts[event_id] = StoredReceipt(event_id, partner.id, o.content_sha256, o.topic, partition, offset,
                                               ts, datetime.now(UTC))
        saved = await gw.run_io(lambda: {k: gw.store.put(r) for k, r in receipts.items()})
        gw.metrics.published.labels(partner.id).inc(len(saved))
        for i, o in waiting:
            if o.event_id in saved:
                results[i] = _receipt_of(saved[o.event_id])
            else:
                problem = Problem(type=PROBLEM_BASE + "bus_unavailable", title="The bus could not take the event now",
                                  status=503, code="bus_unavailable")
                results[i] = (503, None, problem)
    return [r if r is not None else _internal_error() for r in results]


async def publish(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    partner = await authenticated(request)
    _json_body(request)
    _rate(gw, partner, 1)
    raw = await _read(request, MAX_EVENT_BYTES)
    [(status, receipt, problem)] = await _publish(gw, partner, [raw])
    if problem is not None:
        return problem_response(problem, {"Retry-After": "5"} if status == 503 else None)
    assert receipt is not None
    return json_response(receipt, status)


async def publish_batch(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    partner = await authenticated(request)
    _json_body(request)
    _rate(gw, partner, 1)  # the parse below costs something even when the batch is refused
    if gw.batches_in_flight.get(partner.id, 0) >= BATCHES_IN_FLIGHT:
        raise ProblemError(429, "batches_in_flight", f"At most {BATCHES_IN_FLIGHT} batches at a time; send the "
                           "next when one is answered", headers={"Retry-After": "1"})
    gw.batches_in_flight[partner.id] = gw.batches_in_flight.get(partner.id, 0) + 1
    try:
        outcomes = await _publish_batch(gw, partner, request)
    finally:
        gw.batches_in_flight[partner.id] -= 1
    results = [BatchItem(index=i, status=status, receipt=receipt, problem=problem)
               for i, (status, receipt, problem) in enumerate(outcomes)]
    accepted = sum(1 for r in results if r.receipt is not None)
    return json_response(BatchResult(accepted=accepted, rejected=len(results) - accepted, results=results))


async def _publish_batch(gw: Gateway, partner: Partner, request: web.Request,
                         ) -> list[Outcome]:
    raw = await _read(request, MAX_BATCH_BYTES)
    if batch_values(raw) > MAX_BATCH_VALUES:
        raise ProblemError(413, "too_large", "The batch holds too many JSON values",
                           detail=f"at most {MAX_BATCH_VALUES} objects, arrays and members in a batch")
    try:
        async with gw.batch_parses:
            batch = await asyncio.to_thread(BatchRequest.model_validate_json, raw)
    except ValidationError as exc:
        raise ProblemError(422, "invalid_batch", "The batch is invalid", _validation_problem(exc)) from None
    del raw
    _rate(gw, partner, len(batch.events) - 1)
    return await _publish(gw, partner, [json.dumps(event, ensure_ascii=False).encode() for event in batch.events])


#: a JSON string (an unterminated one runs to the end): linear, whatever the bytes
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.S)


def batch_values(raw: bytes) -> int:
    """An upper bound of the JSON values in `raw` beyond its top level: its commas and opening
    brackets outside strings (a narrative's commas are not values), counted without parsing it."""
    bare = _STRING.sub(b'""', raw)
    return bare.count(b",") + bare.count(b"{") + bare.count(b"[")


async def status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    partner = await authenticated(request)
    _rate(gw, partner, 1, reads=True)
    try:
        event_id = str(uuid.UUID(request.match_info["event_id"]))
    except ValueError:
        raise ProblemError(422, "invalid_event_id", "The event id is not a UUID",
                           field_problem("event_id", "uuid_parsing", "must be a UUID")) from None
    receipt = await gw.run_io(gw.store.get, partner.id, event_id, pool=gw.lookups)
    if receipt is None:  # another partner's event is as unknown as none
        raise ProblemError(404, "unknown_event", "No event with this id was published by you through the gateway")
    partnership, _signers = await _policy(gw)
    try:
        result = await gw.run_io(event_status, receipt, partner, gw.store, partnership, gw.audit_lookup,
                                 pool=gw.lookups)
    except Exception as exc:  # the audit store is down or busy: say so, do not guess
        log.warning("status_unavailable", error=type(exc).__name__)
        raise ProblemError(503, "status_unavailable", "The event's status cannot be read now",
                           headers={"Retry-After": "5"}) from None
    return json_response(result)


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError
    except ValueError:
        raise ProblemError(422, "invalid_parameter", f"{name} must be an integer from {low} to {high}",
                           field_problem(name, "invalid_parameter", f"an integer from {low} to {high}")) from None
    return value


async def _on_mailbox(gw: Gateway, cursor_field: str, call: Callable[..., Any], *args: Any) -> Any:
    """A mailbox call off the event loop, its failures as problems (`cursor_field`: where the
    caller put the cursor)."""
    try:
        return await gw.run_io(call, *args, pool=gw.polls)
    except MailboxBusy:
        raise ProblemError(429, "mailbox_busy", "Another read or acknowledgement of this mailbox is in progress",
                           headers={"Retry-After": "1"}) from None
    except BadCursor as exc:
        raise ProblemError(422, "invalid_cursor", "The cursor is not valid for this mailbox",
                           field_problem(cursor_field, "invalid_cursor", str(exc))) from None
    except (KafkaException, MailboxUnavailable):
        raise ProblemError(503, "bus_unavailable", "The mailbox cannot be used now",
                           headers={"Retry-After": "5"}) from None


async def mailbox(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    partner = await authenticated(request)
    _rate(gw, partner, 1, reads=True)
    limit = _query_int(request, "limit", 100, 1, MAX_BATCH)
    wait = _query_int(request, "wait", 0, 0, MAX_WAIT_S)
    after = request.query.get("after")
    items, cursor, more = await _on_mailbox(gw, "after", gw.mailbox(partner.id).read, after, limit, float(wait))
    return json_response(MailboxPage(items=[MailboxItem(partition=d.partition, offset=d.offset,
                                                        delivered_at=d.delivered_at, event=d.event) for d in items],
                                     cursor=cursor, more=more))


async def ack(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    partner = await authenticated(request)
    _rate(gw, partner, 1, reads=True)
    _json_body(request)
    raw = await _read(request, 8192)
    try:
        body = AckRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ProblemError(422, "invalid_body", "The body is invalid", _validation_problem(exc)) from None
    advanced = await _on_mailbox(gw, "cursor", gw.mailbox(partner.id).ack, body.cursor)
    return json_response(AckResult(cursor=body.cursor, advanced=advanced))


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[problems], client_max_size=MAX_BATCH_BYTES)
    app[GATEWAY_KEY] = gw
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/events", publish)
    app.router.add_post("/v1/events:batch", publish_batch)
    app.router.add_get("/v1/events/{event_id}/status", status)
    app.router.add_get("/v1/mailbox", mailbox)
    app.router.add_post("/v1/mailbox/ack", ack)
    return app


def server_tls(home: Path, cert: Path | None = None, key: Path | None = None, ca_file: Path | None = None,
               ) -> ssl.SSLContext:
    """TLS 1.2+ with the gateway's certificate; client certificates are asked for (not required,
    so /healthz and the OpenAPI document stay open) and checked against the partnership CA
    only: a certificate from any other CA fails the handshake. Given no certificate, the local
    stack's is used (issued from the partnership CA on first start: local use only; in
    production give the gateway a certificate and keep the CA key away from it)."""
    if cert is not None and key is not None:
        issued = Issued(key, cert, ca_file or ca_path(home))
    else:
        ca = PartnershipCA(home)
        issued = ca.issued(GATEWAY_SERVER_CERT) or ca.issue(GATEWAY_SERVER_CERT, server=True, client=False,
                                                              hosts=LOCAL_HOSTS)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(issued.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(issued.cert), str(issued.key))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class _NoRequestContent(logging.Filter):
    """aiohttp logs a malformed request with the bytes it choked on (part of a URL or body);
    keep the fact, drop the content."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = "malformed_request: %s", (type(record.exc_info[1]).__name__
                                                            if record.exc_info and record.exc_info[1] else "error",)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


async def serve(gw: Gateway, settings: Settings, host: str, port: int, metrics_port: int,
                on_ready: Callable[[dict[str, Any]], None] | None = None, tls: ssl.SSLContext | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop taking requests, finish those in flight, flush."""
    home = settings.home
    import os
    import signal

    from bus.security.files import write_private

    logging.getLogger("aiohttp.server").addFilter(_NoRequestContent())
    gw.start()
    runner = web.AppRunner(build_app(gw), access_log=None, handle_signals=False,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls or server_tls(home), shutdown_timeout=10)
    await site.start()
    server: Any = site._server
    bound = int(server.sockets[0].getsockname()[1]) if server is not None else port
    gw.metrics.registry.register(gw.lag)
    metrics_server, metrics_url = serve_metrics(gw.metrics.registry, settings, "sgbus-gateway", port=metrics_port)
    info = {"url": f"https://{host}:{bound}", "metrics_url": metrics_url, "pid": os.getpid()}
    write_private(state_path(home), json.dumps(info))
    log.info("gateway_started", url=info["url"], metrics=info["metrics_url"])
    if on_ready is not None:
        on_ready(info)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        targets.stopping()
    finally:
        log.info("gateway_stopping")
        await runner.cleanup()
        metrics_server.shutdown()
        await asyncio.to_thread(gw.close)
        state_path(home).unlink(missing_ok=True)
