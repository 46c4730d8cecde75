"""The decision cache: reused only for requests policy cannot tell apart, under one revision on
one day; the Rego reads nothing the key leaves out; a disagreeing answer drops the cache."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bus.exceptions import PolicyUnavailable
from bus.policy.cache import POLICY_READS, DecisionCache, condition_attributes
from bus.policy.data import load_partnership
from bus.policy.decision import Decision
from bus.pseudonymise.keyring import Keyring
from bus.route import Router
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")
SHARE_REGO = [p for p in (REPO / "policies" / "sgbus" / "share").glob("*.rego") if not p.name.endswith("_test.rego")]


class _Policy:
    """Answers like OPA would for a stand-in policy: allow unless the event names school
    100000; counts what it is asked. `revision` and `agreement` can be changed between batches."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.revision = "sha256:one"
        self.agreement = "DSA-TEST"

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        self.asked.append(len(requests))
        return [Decision.model_validate({
            "event_id": r["event"]["event_id"], "recipient": r["recipient"], "purpose": r["purpose"],
            "allow": r["event"]["attributes"].get("school_urn") != "100000", "agreement": self.agreement,
            "reasons": [f"{r['event']['event_type']} to {r['recipient']}"], "revision": self.revision,
            "identifiers": {"nhs_number": "token"}}) for r in requests]


def _events(n: int, keyring: Keyring, **attributes: Any) -> list[Any]:
    s = Synth(seed=5)
    out = []
    for _ in range(n):
        raw = s.domestic_abuse_incident(s.child(6, 10))  # each its own child, reference and time
        raw["payload"].update(attributes)
        out.append(pseudonymised(parse_event_dict(raw), keyring))
    return out


def _router(policy: _Policy, keyring: Keyring, cache: DecisionCache | None = None) -> Router:
    router = Router(PARTNERSHIP, keyring, policy, policy.revision,  # type: ignore[arg-type]
                    cache=cache if cache is not None else DecisionCache())
    router.check_vouches_s = 0.0  # every batch checks; a check vouching for later ones has its own tests
    return router


def test_events_policy_cannot_tell_apart_are_decided_once_and_each_decision_names_its_own_event() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    first = asyncio.run(router.route_batch(_events(3, keyring)))
    assert first.cache_hits == 0 and sum(policy.asked) == first.cache_misses > 0
    policy.asked.clear()
    later = _events(20, keyring)  # other children, references, times: the same to policy
    plan = asyncio.run(router.route_batch(later))
    assert policy.asked == [1]  # only the spot check
    assert plan.cache_hits == len(plan.decisions) - 1
    assert [d.event_id for d in plan.decisions] == [str(e.event_id) for e, _ in
                                                   _pairs(router, later)]
    assert {str(a.event_id) for a in plan.audits} == {str(e.event_id) for e in later}


def _pairs(router: Router, events: list[Any]) -> list[Any]:
    from bus.route import requests_for

    return requests_for(router.partnership, events)


def test_an_attribute_an_agreement_condition_reads_is_part_of_the_key() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    assert "school_urn" in condition_attributes(PARTNERSHIP)
    asyncio.run(router.route_batch(_events(2, keyring)))
    plan = asyncio.run(router.route_batch(_events(2, keyring, school_urn="100000")))
    assert plan.cache_hits == 0 and not any(d.allow for d in plan.decisions)


def test_a_new_revision_or_a_new_day_empties_what_was_cached() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    cache = DecisionCache()
    router = _router(policy, keyring, cache)
    asyncio.run(router.route_batch(_events(2, keyring)))
    assert len(cache) > 0
    cache.pin("sha256:two", PARTNERSHIP)
    assert len(cache) == 0
    request = _pairs(router, _events(1, keyring))[0][1]
    assert cache.key(request, "2026-11-26") != cache.key(request, "2026-11-27")


def test_a_reloaded_policy_is_noticed_through_the_spot_check_and_nothing_is_shared_on_old_decisions() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    asyncio.run(router.route_batch(_events(2, keyring)))
    policy.revision = "sha256:two"  # `sgbus policy reload`
    try:
        asyncio.run(router.route_batch(_events(5, keyring)))
    except PolicyUnavailable:
        pass
    else:
        raise AssertionError("a batch decided partly under the old revision was shared")
    policy.asked.clear()
    router.revision = "sha256:two"  # what the router re-pins to (its source is not wired here)
    plan = asyncio.run(router.route_batch(_events(5, keyring)))
    assert plan.cache_hits == 0 and {d.revision for d in plan.decisions} == {"sha256:two"}


def test_a_cached_decision_opa_no_longer_gives_under_the_same_revision_drops_the_cache_for_good() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    cache = DecisionCache()
    router = _router(policy, keyring, cache)
    asyncio.run(router.route_batch(_events(2, keyring)))
    policy.agreement = "DSA-OTHER"  # the policy read something the key left out
    events = _events(6, keyring)
    plan = asyncio.run(router.route_batch(events))
    assert cache.disabled and plan.cache_hits == 0
    assert {d.agreement for d in plan.decisions} == {"DSA-OTHER"}
    policy.asked.clear()
    asyncio.run(router.route_batch(events))
    assert sum(policy.asked) == len(plan.decisions)  # every request asked again


def _rego_source() -> str:
    # Comments are not code: drop them before looking for reads.
    return "\n".join(re.sub(r"#.*", "", line) for p in SHARE_REGO for line in p.read_text().splitlines())


def test_share_policy_reads_of_input_are_only_today_and_the_requests() -> None:
    reads = set(re.findall(r"\binput\.(\w+)", _rego_source()))
    assert reads == {"today", "requests"}, (
        "share.rego reads more of the input: add it to the decision cache's key (bus/policy/cache.py)")


def test_share_policy_reads_of_an_event_are_what_the_cache_keys_on() -> None:
    """A policy change that reads another event field (say occurred_at) fails here until
    POLICY_READS names it; the key would otherwise reuse decisions policy would not give."""
    source = _rego_source()
    # Every way the Rego holds an event: req.event, or a function parameter named event.
    fields = set(re.findall(r"\breq\.event\.(\w+)", source)) | set(re.findall(r"(?<![\w.])event\.(\w+)", source))
    assert fields <= {*POLICY_READS, "attributes", "event_id"}, fields - {*POLICY_READS, "attributes", "event_id"}
    assert not re.search(r"\breq\.event\b(?!\.)", source.replace("_source_partner_ids(req.event)", "")), (
        "req.event is passed whole somewhere new: check what reads it")
    # Attributes are only read by name from an agreement condition, and event ids only echoed.
    attribute_reads = re.findall(r"[^\n]*\breq\.event\.attributes\b[^\n]*", source)
    assert attribute_reads and all(
        re.search(r"object\.get\(req\.event\.attributes, c\.(attribute|recipient_org_matches), null\)", line)
        for line in attribute_reads), attribute_reads
    echoes = re.findall(r"[^\n]*\breq\.event\.event_id\b[^\n]*", source)
    assert echoes and all(line.strip() == '"event_id": req.event.event_id,' for line in echoes), echoes


def _decisions_by_opa(tmp_path: Path, requests: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    import json
    import subprocess

    from bus import toolchain
    from bus.policy.data import catalogue

    data, given = tmp_path / "data.json", tmp_path / f"{name}.json"
    if not data.exists():
        data.write_text(json.dumps({"sgbus": {"partnership": PARTNERSHIP.as_opa_data(), "catalogue": catalogue(),
                                              "meta": {"revision": "sha256:test"}}}))
    given.write_text(json.dumps({"today": "2026-11-26", "requests": requests}))
    opa = str(toolchain.ensure_opa().path)
    out = subprocess.run([opa, "eval", "--format", "json", "-d", str(REPO / "policies" / "sgbus"), "-d", str(data),
                          "-i", str(given), "data.sgbus.share.decisions"],
                         capture_output=True, text=True, timeout=120, check=True)
    result: list[dict[str, Any]] = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return result


def test_the_share_policy_gives_the_same_decision_whatever_the_request_holds_outside_the_key(tmp_path: Path) -> None:
    """Differential check of the key against the real policy: every request changed outside
    the key (event id, occurred_at, every attribute no condition names, with values of other
    types) and put in another batch (other order, other neighbours) is decided alike."""
    import random

    from bench.opa import sample_requests

    rng = random.Random(19)
    keyed = set(condition_attributes(PARTNERSHIP))
    requests = sample_requests(REPO / "policies", 600, seed=4)
    for r in requests[::3]:  # some urgent, with and without a justification and a known role
        r["event"] |= {"urgent": True, "justification_recorded": rng.random() < 0.7,
                       "override_role": rng.choice(["duty inspector", "MASH manager", None])}
    changed = []
    for r in requests:
        event = r["event"]
        attributes = {k: (v if k in keyed else rng.choice([None, 0, 1.5, True, "x", [], {"a": 1}]))
                      for k, v in event["attributes"].items()}
        attributes |= {"unkeyed_extra": rng.random()}
        changed.append({**r, "event": {**event, "event_id": f"changed-{rng.random()}",
                                       "occurred_at": "1999-01-01T00:00:00+00:00", "attributes": attributes}})
    order = list(range(len(changed)))
    rng.shuffle(order)
    batch = [changed[i] for i in order] + [changed[0]] * 5
    first = _decisions_by_opa(tmp_path, requests, "original")
    second = _decisions_by_opa(tmp_path, batch, "changed")
    cache = DecisionCache()
    cache.pin("sha256:test", PARTNERSHIP)
    assert len({cache.key(r, "2026-11-26") for r in requests}) < len(requests) / 2  # the key repeats
    differ = [i for pos, i in enumerate(order)
              if {**first[i], "event_id": None} != {**second[pos], "event_id": None}]
    assert not differ, f"{len(differ)} decisions changed with what the cache key leaves out"
    assert sum(d["allow"] for d in first) > 100 and sum(not d["allow"] for d in first) > 10
    assert any(d["override"] for d in first)


def test_a_condition_with_parts_of_both_forms_is_refused_so_no_name_escapes_the_key() -> None:
    import pytest
    from pydantic import ValidationError

    from bus.policy.data import Condition

    with pytest.raises(ValidationError):
        Condition(attribute="risk_grade", recipient_org_matches="school_urn")
    with pytest.raises(ValidationError):
        Condition(attribute="risk_grade", equals="high", recipient_org_matches="school_urn")
    assert Condition(recipient_org_matches="school_urn").attribute is None


def _warm(router: Router, keyring: Keyring) -> None:
    """Two batches: the first fills the cache, the second takes from it (what a check sent
    ahead re-asks is a request answered from the cache, so that it tests the key too). The
    checks below are sent and used at once; allow them any age (the age limit has its own test)."""
    asyncio.run(router.route_batch(_events(2, keyring)))
    asyncio.run(router.route_batch(_events(2, keyring)))
    router.probe_ahead_max_age_s = 60.0


def _opa_down(policy: _Policy) -> None:
    async def down(requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        raise PolicyUnavailable("OPA is down")

    policy.decide_batch = down  # type: ignore[method-assign]


def _route_with_ahead(router: Router, events: list[Any], before_taking: Any = None) -> Any:
    """As the pipelined worker does: the spot check is sent as the batch is taken, then the
    batch is decided (`before_taking` runs in between, e.g. a reload)."""

    async def go() -> Any:
        ahead = router.probe_ahead()
        assert ahead is not None, "nothing to check ahead after a batch took decisions from the cache"
        if before_taking is not None:
            before_taking()
        return await router.route_batch(events, ahead)

    return asyncio.run(go())


def test_the_spot_check_sent_ahead_stands_for_the_in_batch_one() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)
    policy.asked.clear()
    plan = _route_with_ahead(router, _events(20, keyring))
    assert policy.asked == [1]  # the check sent ahead; nothing asked for the batch itself
    assert plan.cache_hits == len(plan.decisions) > 0


def test_a_reload_seen_by_the_spot_check_sent_ahead_refuses_the_batch() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)
    policy.revision = "sha256:two"  # `sgbus policy reload`, then the next batch is taken
    policy.asked.clear()
    try:
        _route_with_ahead(router, _events(5, keyring))  # every request cached: only the check asks
    except PolicyUnavailable:
        pass
    else:
        raise AssertionError("a batch decided under the old revision after a reload was shared")
    assert policy.asked == [1]


def test_a_disagreeing_answer_to_the_spot_check_sent_ahead_drops_the_cache() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    cache = DecisionCache()
    router = _router(policy, keyring, cache)
    _warm(router, keyring)
    policy.agreement = "DSA-OTHER"  # the policy read something the key left out
    plan = _route_with_ahead(router, _events(4, keyring))
    assert cache.disabled and plan.cache_hits == 0
    assert {d.agreement for d in plan.decisions} == {"DSA-OTHER"}


def test_a_spot_check_sent_under_an_older_pin_is_not_used() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)

    def repinned() -> None:  # the router re-pinned (another batch saw a reload) after it left
        policy.revision = router.revision = "sha256:two"
        policy.asked.clear()

    plan = _route_with_ahead(router, _events(3, keyring), repinned)
    assert plan.cache_hits == 0 and {d.revision for d in plan.decisions} == {"sha256:two"}
    assert sum(policy.asked) == len(plan.decisions)


def test_opa_failing_the_spot_check_sent_ahead_holds_the_batch() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)
    _opa_down(policy)
    try:
        _route_with_ahead(router, _events(3, keyring))
    except PolicyUnavailable:
        pass
    else:
        raise AssertionError("a batch was decided from the cache while OPA could not answer")


def test_nothing_is_checked_ahead_until_a_batch_took_a_decision_from_the_cache() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)

    async def ahead_after_first_batch() -> Any:
        await router.route_batch(_events(2, keyring))  # every request a miss: their own answers cached
        return router.probe_ahead()

    assert asyncio.run(ahead_after_first_batch()) is None


def test_a_spot_check_sent_ahead_too_long_before_its_batch_is_decided_is_not_used() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)
    router.probe_ahead_max_age_s = 0.0  # the batch was held (a store outage, a backlog) after its check left

    async def go() -> None:
        ahead = router.probe_ahead()
        assert ahead is not None
        await ahead.answer  # answered under the old revision...
        policy.revision = "sha256:two"  # ...then `sgbus policy reload`, before the batch is decided
        policy.asked.clear()
        await router.route_batch(_events(3, keyring), ahead)

    try:
        asyncio.run(go())
    except PolicyUnavailable:
        pass
    else:
        raise AssertionError("a batch was shared on a spot check older than the reload")
    assert policy.asked == [1]  # checked again in-batch


def test_a_batch_with_nothing_to_decide_does_not_wait_for_its_spot_check() -> None:

    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    _warm(router, keyring)
    _opa_down(policy)

    async def go() -> Any:
        ahead = router.probe_ahead()
        assert ahead is not None
        return await router.route_batch([], ahead)  # e.g. every event of the batch a replay

    plan = asyncio.run(go())
    assert plan.decisions == [] and plan.deliveries == []


def _vouching(policy: _Policy, keyring: Keyring) -> Router:
    """A router whose last spot check (the second warm batch's) vouches for what follows."""
    router = _router(policy, keyring)
    router.check_vouches_s = 60.0
    asyncio.run(router.route_batch(_events(2, keyring)))  # fills the cache (no check: nothing cached)
    asyncio.run(router.route_batch(_events(2, keyring)))  # all cached: checks one, which then vouches
    policy.asked.clear()
    return router


def test_a_fully_cached_batch_soon_after_a_good_spot_check_asks_opa_nothing() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)

    async def go() -> Any:
        assert router.probe_ahead() is None  # nothing sent ahead either
        return await router.route_batch(_events(2, keyring))

    plan = asyncio.run(go())
    assert policy.asked == [] and plan.cache_hits == len(plan.decisions) > 0


def _age_vouch(router: Router, seconds: float) -> None:
    """As if the last good check had been sent `seconds` earlier."""
    vouch = router._vouched
    assert vouch is not None
    router._vouched = vouch._replace(sent_at=vouch.sent_at - seconds)


def test_once_the_vouching_check_is_older_than_the_limit_a_reload_is_seen_again() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    router.check_vouches_s = 0.1
    policy.revision = "sha256:two"  # `sgbus policy reload`
    _age_vouch(router, 0.2)
    with pytest.raises(PolicyUnavailable):
        asyncio.run(router.route_batch(_events(2, keyring)))
    assert policy.asked == [1]


def test_a_check_vouches_from_when_it_was_sent_not_when_it_was_answered() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    sent: list[float] = []
    answer = policy.decide_batch

    async def slow(requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        sent.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)  # OPA taking its time: the vouch must not start when it answers
        return await answer(requests, today)

    policy.decide_batch = slow  # type: ignore[method-assign]
    router = _vouching(policy, keyring)
    assert router._vouched is not None and router._vouched.sent_at <= sent[-1]


def test_a_vouch_under_another_pin_or_day_stands_for_nothing() -> None:
    from bus.route import _Vouch

    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    vouch = router._vouched
    assert vouch is not None
    for stale in (vouch._replace(revision="sha256:older"), vouch._replace(day="2000-01-01")):
        assert isinstance(stale, _Vouch)
        router._vouched = stale
        policy.asked.clear()
        asyncio.run(router.route_batch(_events(2, keyring)))
        assert policy.asked == [1]


def test_a_check_is_sent_ahead_again_once_the_last_one_is_half_the_limit_old() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    router.check_vouches_s = 0.1

    async def go() -> tuple[bool, bool]:
        recent = router.probe_ahead() is None
        _age_vouch(router, 0.06)
        ahead = router.probe_ahead()
        if ahead is not None:
            await asyncio.wait([ahead.answer])
            ahead.discard()
        return recent, ahead is not None

    assert asyncio.run(go()) == (True, True)


def test_after_a_batch_saw_a_reload_the_next_fully_cached_one_checks_again() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    policy.revision = "sha256:two"
    with pytest.raises(PolicyUnavailable):  # a request not cached: its answer shows the reload
        asyncio.run(router.route_batch([*_events(2, keyring), *_events(1, keyring, school_urn="100000")]))
    policy.asked.clear()
    with pytest.raises(PolicyUnavailable):  # all cached, and the last check is recent: still checked
        asyncio.run(router.route_batch(_events(2, keyring)))
    assert policy.asked == [1]


def test_after_opa_failed_a_batch_the_next_fully_cached_one_is_not_shared_on_the_last_check() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    _opa_down(policy)
    with pytest.raises(PolicyUnavailable):
        asyncio.run(router.route_batch(_events(1, keyring, school_urn="100000")))  # not cached: asks
    with pytest.raises(PolicyUnavailable):
        asyncio.run(router.route_batch(_events(2, keyring)))  # all cached, last check recent


def test_a_batch_that_asks_opa_anything_sees_a_reload_even_while_a_check_vouches() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _vouching(policy, keyring)
    policy.revision = "sha256:two"
    fresh = [*_events(2, keyring), *_events(1, keyring, school_urn="100000")]  # the last: a key not cached
    with pytest.raises(PolicyUnavailable):
        asyncio.run(router.route_batch(fresh))
    assert policy.asked == [len(_pairs(router, fresh[2:]))]  # the uncached requests only: no spot check


def test_a_check_that_saw_a_reload_vouches_for_nothing() -> None:
    keyring, policy = Keyring.generate(), _Policy()
    router = _router(policy, keyring)
    router.check_vouches_s = 60.0
    asyncio.run(router.route_batch(_events(2, keyring)))
    policy.revision = "sha256:two"
    for _ in range(2):  # refused each time: the failed check left nothing to vouch for the next batch
        with pytest.raises(PolicyUnavailable):
            asyncio.run(router.route_batch(_events(2, keyring)))
