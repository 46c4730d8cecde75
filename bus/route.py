"""Route: candidates from subscriptions, one batched policy query, per-recipient views, audit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

from bus import logs
from bus.audit.records import audit_record
from bus.exceptions import KeyringError, PolicyUnavailable
from bus.policy.cache import DecisionCache, Key, same_decision
from bus.policy.client import PolicyClient
from bus.policy.data import Partner, Partnership
from bus.policy.decision import Decision
from bus.policy.today import uk_today
from bus.pseudonymise.engine import (
    names_in,
    original_text,
    partner_key,
    policy_attributes,
    recipient_view,
    redact_each,
    redact_later,
    reveal_subject,
    values_in,
)
from bus.pseudonymise.keyring import Keyring
from bus.records import AuditRecord, DeliveredEvent, PseudonymisedEvent
from bus.replay_proofs import replay_proof
from bus.routing import candidates
from bus.topics import deliver_topic
from schemas.envelope import Envelope

log = logs.get("sgbus.route")


@dataclass(frozen=True)
class Delivery:
    topic: str
    key: str
    event: DeliveredEvent
    ingest_id: str


@dataclass(frozen=True)
class FailedView:
    """An allowed share whose view could not be built (a key this worker lacks, or a bug):
    audited as view_failed and dead-lettered with where the event is, for `sgbus replay --failed`."""

    event: PseudonymisedEvent
    recipient: str
    error: str


@dataclass
class RoutePlan:
    deliveries: list[Delivery] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    failed: list[FailedView] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0


def policy_event(event: PseudonymisedEvent | Envelope) -> dict[str, Any]:
    """What policy may see of one event (schemas/policy_input.py is its contract); works on a
    raw event too, so `sgbus policy simulate` asks exactly what the worker asks."""
    payload: Any = getattr(event, "payload")  # noqa: B009 - every event has one
    if not isinstance(payload, dict):
        payload = payload.model_dump(mode="json")
    # A plain dict with PolicyEvent's fields, in its order, rather than building and dumping the
    # model for every event (~9 µs each); tests/unit/test_policy_requests.py holds the dict to
    # the model (same keys, same values once validated).
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "agency": event.source.agency.value,
        "org_id": event.source.org_id,
        "occurred_at": event.occurred_at.isoformat(),
        "attributes": policy_attributes(event.event_type, payload),
        # sg.events keeps an urgency block only when ingest verified its declaration; a raw event
        # (policy simulate) counts as declared when it carries a declaration at all.
        "urgent": event.urgency is not None and (isinstance(event, PseudonymisedEvent)
                                                 or bool(event.urgency.declaration)),
        "justification_recorded": event.urgency is not None and bool(event.urgency.justification.strip()),
        "override_role": event.urgency.declared_by_role if event.urgency is not None else None,
    }


E = TypeVar("E", PseudonymisedEvent, Envelope)


def requests_for(partnership: Partnership, events: list[E]) -> list[tuple[E, dict[str, Any]]]:
    """(event, policy request) for every candidate recipient of every event; each request
    is one entry of input.requests (schemas.policy_input.PolicyRequest)."""
    pairs = []
    for event in events:
        cands = candidates(partnership, event.event_type, event.source.agency.value, event.source.org_id)
        only = getattr(event, "replay_for", None)
        if only is not None:  # a replay of failed views: only the recipients that missed it
            cands = [c for c in cands if c.recipient in only]
        if not cands:
            continue
        visible = policy_event(event)  # built once, shared by the event's requests
        for cand in cands:
            pairs.append((event, {"event": visible, "recipient": cand.recipient, "purpose": cand.purpose}))
    return pairs


@dataclass
class ProbeAhead:
    """A batch's spot check of the decision cache, sent when the batch is taken rather than
    once it is prepared and registered: a request an earlier batch took from the cache, asked
    afresh while ingest works (Router.probe_ahead). Its answer is what OPA held at most
    PROBE_AHEAD_MAX_AGE_S before the batch is decided; an older one is not used."""

    revision: str  # the revision pinned when it was sent
    key: Key
    cached: Decision
    answer: asyncio.Future[list[Decision]]
    sent_at: float  # the event loop's clock

    def discard(self) -> None:
        """Done with (used, or not: nothing to decide, another pin or day, too old): stop it if
        still in flight, and never leave its error unread."""
        if not self.answer.done():
            self.answer.cancel()
        elif not self.answer.cancelled():
            self.answer.exception()


#: The oldest a spot check sent ahead may be when its batch is decided. A batch held longer
#: (a store or redactor outage, a backlog) checks in-batch instead, so a reload is seen by
#: every batch decided from this long after it (before probe_ahead: from the moment of it).
PROBE_AHEAD_MAX_AGE_S = 0.1
#: ...and how long a spot check's answer vouches for the batches decided after it was sent: they
#: ask nothing of OPA if all their requests are cached. The same bound as above (a reload is seen
#: by every batch decided from this long after it); at 50 events/s a batch every ~30 ms had sent
#: a check each, ~35 OPA queries a second for ~1 cached miss.
CHECK_VOUCHES_S = PROBE_AHEAD_MAX_AGE_S


class _Vouch(NamedTuple):
    """The last spot check OPA answered as the cache did."""

    revision: str  # the pin it was made (and answered) under
    day: str
    sent_at: float  # the event loop's clock, read before the request left


PartnershipSource = Callable[[], tuple[Partnership, str]]
KeyringSource = Callable[[bool], Keyring]  # force: re-read even if the file looks unchanged


class Router:
    """Pure routing logic around one PolicyClient; the Faust agent only moves bytes."""

    def __init__(self, partnership: Partnership, keyring: Keyring, policy: PolicyClient,
                 revision: str = "unknown", source: PartnershipSource | None = None,
                 query_events: int = 100, keyring_source: KeyringSource | None = None,
                 cache: DecisionCache | None = None) -> None:
        self.partnership = partnership
        self.cache = cache
        self._keyring_source = keyring_source
        self.query_events = query_events
        self.keyring = keyring
        self.policy = policy
        self.revision = revision
        self._source = source
        # A request decided recently (its cache key and the request), for the next batch's
        # spot check sent ahead (probe_ahead).
        self._probe_next: tuple[Key, dict[str, Any]] | None = None
        self.probe_ahead_max_age_s = PROBE_AHEAD_MAX_AGE_S
        self.check_vouches_s = CHECK_VOUCHES_S
        self._vouched: _Vouch | None = None

    def _vouched_age(self, today: str) -> float | None:
        """Seconds since the last good spot check was sent, if under this pin and day."""
        v = self._vouched
        if v is None or v.revision != self.revision or v.day != today:
            return None
        return asyncio.get_running_loop().time() - v.sent_at

    def probe_ahead(self) -> ProbeAhead | None:
        """Send the next batch's spot check of the cache now (call it as the batch is taken):
        at light load that OPA round trip is the batch's longest wait, and here it overlaps
        ingest's. None when there is nothing cached to check (the batch then checks in-batch)."""
        cache, remembered = self.cache, self._probe_next
        if cache is None or cache.disabled or remembered is None:
            return None
        key, request = remembered
        if key[0] != uk_today().isoformat():
            return None  # cached on another day: emptied by the batch's own pin
        cached = cache.get(key, request["event"]["event_id"])
        if cached is None:
            return None
        age = self._vouched_age(key[0])
        if age is not None and age < self.check_vouches_s / 2:
            return None  # the last check will most likely still vouch when this batch is decided
        answer = asyncio.ensure_future(self.policy.decide_batch([request], key[0]))
        return ProbeAhead(cached.revision, key, cached, answer, asyncio.get_running_loop().time())

    async def refresh(self) -> None:
        """Re-read the partnership and revision OPA holds now (after `sgbus policy reload`)."""
        if self._source is not None:
            try:
                self.partnership, self.revision = await asyncio.to_thread(self._source)
            except PolicyUnavailable:
                pass  # keep what we have; the caller retries

    async def _check_revision(self, decisions: list[Decision]) -> None:
        """Decisions count only if they carry the revision this worker pinned (the one whose
        partners and subscriptions it routes with). After `sgbus policy reload` they carry a
        new one: share nothing from this batch, re-pin to what OPA now holds, and let the
        caller retry the batch under it."""
        if all(d.revision == self.revision for d in decisions):
            return
        self._vouched = None  # OPA holds another revision now: no earlier check stands for anything
        if self._source is not None:
            try:
                self.partnership, self.revision = await asyncio.to_thread(self._source)
            except PolicyUnavailable:
                pass  # keep the pinned revision; the retry asks again
        raise PolicyUnavailable("decisions carry a policy revision other than the pinned one")

    async def _ask(self, groups: list[list[dict[str, Any]]], today: str | None = None) -> list[Decision]:
        """One OPA query per group, sent together; decisions in order; any failure fails all."""
        answers = await asyncio.gather(*(self.policy.decide_batch(g, today) for g in groups), return_exceptions=True)
        decisions: list[Decision] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            decisions.extend(answer)
        return decisions

    async def _decide(self, events: list[PseudonymisedEvent], ahead: ProbeAhead | None = None,
                      ) -> tuple[list[tuple[PseudonymisedEvent, dict[str, Any]]], list[Decision], int]:
        """(event, request) pairs and their decisions, in order, and how many came from the
        cache: one OPA query per `query_events` events (larger queries are slower per
        decision), sent together; any failure fails the whole batch."""
        step = self.query_events
        chunks = [requests_for(self.partnership, events[i:i + step]) for i in range(0, len(events), step)]
        pairs = [pair for chunk in chunks for pair in chunk]
        cache = self.cache
        if cache is None or cache.disabled:
            if ahead is not None:
                ahead.discard()
            return pairs, await self._ask([[req for _, req in chunk] for chunk in chunks]), 0
        today = uk_today().isoformat()
        cache.pin(self.revision, self.partnership)
        loop = asyncio.get_running_loop()
        if ahead is not None and (not pairs or ahead.revision != self.revision or ahead.key[0] != today
                                  or loop.time() - ahead.sent_at > self.probe_ahead_max_age_s):
            # Nothing to decide (no OPA call needed), or sent under another pin or day, or too
            # long ago to vouch for the policy now: check in-batch instead.
            ahead.discard()
            ahead = None
        age = self._vouched_age(today)
        vouched = age is not None and age < self.check_vouches_s
        # An event's requests (one per candidate recipient) share its policy view: its part of
        # the key is built once.
        parts: dict[int, tuple[Any, ...]] = {}
        keys = []
        for _, req in pairs:
            visible = req["event"]
            part = parts.get(id(visible))
            if part is None:
                part = parts[id(visible)] = cache.event_part(visible)
            keys.append(cache.key(req, today, part))
        found = [cache.get(k, req["event"]["event_id"]) for k, (_, req) in zip(keys, pairs, strict=True)]
        ask = [i for i, d in enumerate(found) if d is None]
        # One cached request is asked afresh, unless a check sent under CHECK_VOUCHES_S ago
        # still vouches: OPA's answer shows a reload (its revision) and checks the key (the same
        # answer, or the cache is dropped for good). Sent ahead (a request of an earlier batch,
        # asked while this one was prepared), or else one of this batch's, picked at random.
        hits = [i for i, d in enumerate(found) if d is not None]
        probe = secrets.choice(hits) if hits and ahead is None and not vouched else None  # not always the first
        asked = ask + ([probe] if probe is not None else [])
        per = max(1, step * len(pairs) // max(1, len(events)))  # requests in `step` events, as above
        groups = [[pairs[i][1] for i in asked[j:j + per]] for j in range(0, len(asked), per)]
        checked: tuple[Decision, Decision] | None = None  # (cached, OPA's answer now)
        sent_at = loop.time() if ahead is None else ahead.sent_at
        try:
            if ahead is not None:
                both = await asyncio.gather(self._ask(groups, today), ahead.answer, return_exceptions=True)
                for outcome in both:
                    if isinstance(outcome, BaseException):
                        raise outcome
                answers, (ahead_answer,) = cast(tuple[list[Decision], list[Decision]], tuple(both))
                checked = (ahead.cached, ahead_answer)
            else:
                answers = await self._ask(groups, today)
        except BaseException:
            self._vouched = None  # OPA could not answer: fully cached batches must ask it again too
            raise
        fresh = dict(zip(asked, answers, strict=True))
        if probe is not None:
            cached_probe = found[probe]
            assert cached_probe is not None
            checked = (cached_probe, fresh[probe])
        if checked is not None:
            cached, answer = checked
            if answer.revision == cached.revision and not same_decision(answer, cached):
                log.error("decision_cache_disagrees_with_policy_dropped", revision=answer.revision)
                cache.disable()
                return pairs, await self._ask([[req for _, req in chunk] for chunk in chunks], today), 0
            # A reload shows in the answer's revision: refuse the batch, re-pin, let it be retried.
            await self._check_revision([answer])
            v = self._vouched
            # Only a check that compared like with like (its answer under the cached entry's
            # revision, which is still the pin) vouches; later checks replace earlier ones.
            if answer.revision == cached.revision == self.revision and (
                    v is None or (v.revision, v.day) != (self.revision, today) or v.sent_at < sent_at):
                self._vouched = _Vouch(self.revision, today, sent_at)
        for i in ask:
            cache.put(keys[i], fresh[i])
        # The next check: a request answered from the cache (its entry came from another request),
        # so that asking it again also tests the key, not only the revision.
        reused = [i for i in hits if i != probe]
        if reused:
            remember = secrets.choice(reused)
            self._probe_next = (keys[remember], pairs[remember][1])
        decisions = [fresh[i] if i in fresh else d for i, d in enumerate(found)]
        return pairs, [d for d in decisions if d is not None], len(pairs) - len(asked)

    async def allowed_to(self, events: list[PseudonymisedEvent], recipients: Collection[str]) -> list[set[str]]:
        """For each event, which of `recipients` policy lets it be sent to now: asked as routing
        asks (the recipient's subscription and purpose; not the publisher itself), without the
        cache. Raises PolicyUnavailable (nothing answered) when OPA cannot answer or holds
        another revision than the pinned one."""
        index = {id(event): i for i, event in enumerate(events)}
        pairs = [(index[id(event)], req) for event, req in requests_for(self.partnership, events)
                 if req["recipient"] in recipients]
        owners, requests = [i for i, _ in pairs], [req for _, req in pairs]
        allowed: list[set[str]] = [set() for _ in events]
        if not requests:
            return allowed
        step = self.query_events
        decisions = await self._ask([requests[j:j + step] for j in range(0, len(requests), step)])
        await self._check_revision(decisions)
        for i, decision in zip(owners, decisions, strict=True):
            if decision.allow:
                allowed[i].add(decision.recipient)
        return allowed

    async def route_batch(self, events: list[PseudonymisedEvent], ahead: ProbeAhead | None = None) -> RoutePlan:
        """Raises PolicyUnavailable (nothing decided, nothing shared) when OPA cannot answer.
        `ahead`: the batch's cache spot check, sent as it was taken (probe_ahead)."""
        if self._keyring_source is not None:  # pick up a `keys rotate` before the batch
            self.keyring = self._keyring_source(False)
        pairs, decisions, hits = await self._decide(events, ahead)
        await self._check_revision(decisions)
        plan = RoutePlan(decisions=decisions, cache_hits=hits, cache_misses=len(pairs) - hits)
        # Each event's identity is opened once for all its recipients. Cached per event *object*,
        # not per event id: a publisher can reuse an id for another child (issue 13), and an
        # id-keyed cache gave the second event the first child's identity.
        opened: dict[int, dict[str, Any]] = {}
        redacted = await self._redact_later(pairs, decisions, opened)
        for (event, _req), decision in zip(pairs, decisions, strict=True):
            if not decision.allow:
                plan.audits.append(audit_record(event, decision))
                continue
            partner = self.partnership.partner(decision.recipient)
            if partner is None:  # policy allowed a partner this worker does not know: share nothing
                plan.audits.append(audit_record(event, decision, view_failed="unknown_recipient",
                                                replay_proof=self._proof(event, decision.recipient)))
                continue
            try:
                try:
                    delivery = self._deliver(event, decision, partner, opened, redacted.get(id(event)))
                except KeyringError:
                    if self._keyring_source is None:
                        raise
                    # A key this worker has not loaded yet (e.g. `keys rotate` by another
                    # process): re-read the keyring once; a second failure is recorded below.
                    self.keyring = self._keyring_source(True)
                    delivery = self._deliver(event, decision, partner, opened, redacted.get(id(event)))
            except Exception as exc:  # never stop the stream; the type name is safe to record
                self._failed(plan, event, decision, partner.id, exc)
                continue
            plan.audits.append(audit_record(event, decision))
            plan.deliveries.append(delivery)
        return plan

    async def _redact_later(self, pairs: list[tuple[PseudonymisedEvent, dict[str, Any]]], decisions: list[Decision],
                            opened: dict[int, dict[str, Any]]) -> dict[int, dict[str, str]]:
        """Redacted copies of the free text allowed decisions ask redacted that ingest only
        sealed (a policy reloaded since), per event object, all in one redactor call off the
        event loop. A text that cannot be opened or analysed is left out, so its view fails
        (audited view_failed, dead-lettered for `sgbus replay --failed`). Raises
        RedactorUnavailable: the caller holds the batch."""
        work: dict[tuple[int, str], tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
        for (event, _req), decision in zip(pairs, decisions, strict=True):
            names = [n for n in (redact_later(event, decision) if decision.allow else []) if (id(event), n) not in work]
            if not names:
                continue
            try:
                if id(event) not in opened:
                    opened[id(event)] = reveal_subject(event, self.keyring)
                for name in names:
                    subject = opened[id(event)]
                    work[(id(event), name)] = (original_text(event, name, self.keyring), names_in(subject),
                                               values_in(subject))
            except Exception:  # noqa: S112 - a key this worker lacks: the view fails and says so
                continue
        if not work:
            return {}
        done = await asyncio.to_thread(redact_each, list(work.values()))
        out: dict[int, dict[str, str]] = {}
        for (event_key, name), text in zip(work, done, strict=True):
            if text is not None:
                out.setdefault(event_key, {})[name] = text
        return out

    def _deliver(self, event: PseudonymisedEvent, decision: Decision, partner: Partner,
                 opened: dict[int, dict[str, Any]], redacted: dict[str, str] | None = None) -> Delivery:
        # Each event's identity is opened once for all its recipients. Cached per event *object*,
        # not per event id: a publisher can reuse an id for another child (issue 13), and an
        # id-keyed cache gave the second event the first child's identity.
        if id(event) not in opened:
            opened[id(event)] = reveal_subject(event, self.keyring)
        subject = opened[id(event)]
        view = recipient_view(event, decision, partner, self.keyring, subject, redacted)
        key = partner_key(subject, partner, decision.agreement or "", self.keyring, str(event.ingest_id),
                          override=decision.override)
        return Delivery(deliver_topic(partner.id), key, view, str(event.ingest_id))

    def _failed(self, plan: RoutePlan, event: PseudonymisedEvent, decision: Decision, recipient: str,
                exc: BaseException) -> None:
        error = type(exc).__name__
        plan.audits.append(audit_record(event, decision, view_failed=error, replay_proof=self._proof(event, recipient)))
        plan.failed.append(FailedView(event, recipient, error))

    def _proof(self, event: PseudonymisedEvent, recipient: str) -> str | None:
        """The failed share's replay proof, if the keyring's token key can make it (it is not
        the key the view lacked, but a failed proof must never stop routing)."""
        try:
            return replay_proof(self.keyring, str(event.ingest_id), recipient)
        except Exception:
            return None


def delivery_latency_s(event: DeliveredEvent) -> float:
    return max(0.0, (datetime.now(UTC) - event.recorded_at).total_seconds())
