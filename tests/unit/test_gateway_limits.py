"""What one partner (or anyone who reaches the port) can make the gateway spend: memory for a
batch, broker round trips for a health probe, connections held open, a nesting too deep to read."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bus.gateway import server as S
from bus.gateway.publish import Refused, check_event
from bus.gateway.ratelimit import RateLimiter
from bus.policy.data import load_partnership
from bus.provenance.registry import SignerRegistry

REPO = Path(__file__).parents[2]
POLICE = load_partnership(REPO / "policies" / "data").partner("northshire-police")


def fake_gateway(**extra: Any) -> Any:
    return types.SimpleNamespace(
        health=(-1e9, False),
        metrics=S.GatewayMetrics(),
        _health_check=None,
        limiter=RateLimiter(1000, 10_000),
        batches_in_flight={},
        batch_parses=asyncio.Semaphore(S.BATCH_PARSES),
        **extra,
    )


def test_a_probe_that_failed_oddly_does_not_stop_later_probes_asking_the_broker() -> None:
    calls: list[int] = []

    def list_topics(timeout: float) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("cannot schedule new futures after shutdown")

    gw = fake_gateway(producer=types.SimpleNamespace(list_topics=list_topics))

    async def probe() -> None:
        async with TestClient(TestServer(S.build_app(gw))) as client:
            first = await client.get("/healthz")
            assert first.status == 500
            second = await client.get("/healthz")
            assert second.status == 200 and (await second.json())["kafka"] is True

    asyncio.run(probe())
    assert len(calls) == 2


def test_a_flood_of_health_probes_makes_one_broker_round_trip() -> None:
    calls: list[int] = []

    def list_topics(timeout: float) -> None:
        calls.append(threading.get_ident())
        time.sleep(0.3)

    gw = fake_gateway(producer=types.SimpleNamespace(list_topics=list_topics))

    async def probe() -> None:
        async with TestClient(TestServer(S.build_app(gw))) as client:
            answers = await asyncio.gather(*(client.get("/healthz") for _ in range(20)))
            assert [a.status for a in answers] == [200] * 20
            assert {(await a.json())["kafka"] for a in answers} == {True}

    asyncio.run(probe())
    assert len(calls) == 1


@pytest.fixture
def as_police(monkeypatch: pytest.MonkeyPatch) -> None:
    async def authenticated(_request: web.Request) -> Any:
        return POLICE

    monkeypatch.setattr(S, "authenticated", authenticated)


def _post_batch(gw: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    async def post() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(S.build_app(gw))) as client:
            answer = await client.post("/v1/events:batch", data=body, headers={"Content-Type": "application/json"})
            return answer.status, await answer.json()

    return asyncio.run(post())


def test_a_batch_of_millions_of_empty_objects_is_refused_before_it_is_parsed(as_police: None) -> None:
    body = b'{"events": [{"x": [' + b",".join([b"{}"] * 1_000_000) + b"]}]}"  # 3 MB, ~24x that parsed
    assert len(body) < S.MAX_BATCH_BYTES
    status, problem = _post_batch(fake_gateway(), body)
    assert (status, problem["code"]) == (413, "too_large")


def test_a_real_batch_is_far_below_the_value_limit() -> None:
    import json

    from schemas.synthetic import Synth

    events = list(Synth(seed=4).stream(S.MAX_BATCH))
    assert S.batch_values(json.dumps({"events": events}).encode()) < S.MAX_BATCH_VALUES / 10


def test_commas_in_narratives_are_not_counted_as_values() -> None:
    prose = json.dumps({"events": [{"payload": {"narrative": "a, b, c, " * 5_000}}] * 40}).encode()
    assert S.batch_values(prose) < 200 < prose.count(b",")  # 40 events of 3 values, 600,000 commas
    assert S.batch_values(b'{"a": "x, \\"y\\", z", "b": [1, 2]}') == 4  # escaped quotes stay in the string
    assert S.batch_values(b'{"a": "' + b'\\"' * 100_000) == 1  # an unterminated string runs to the end


def test_a_partner_with_two_batches_in_flight_is_asked_to_wait_for_one(as_police: None) -> None:
    gw = fake_gateway()
    gw.batches_in_flight[POLICE.id] = S.BATCHES_IN_FLIGHT  # type: ignore[union-attr]
    status, problem = _post_batch(gw, b'{"events": [{}]}')
    assert (status, problem["code"]) == (429, "batches_in_flight")


def test_an_event_nested_too_deep_to_read_is_a_bad_request_not_a_server_error() -> None:
    out = check_event(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", POLICE, SignerRegistry())  # type: ignore[arg-type]
    assert isinstance(out, Refused) and out.status == 400


class _Stop(Exception):
    pass


def test_idle_and_half_sent_connections_are_closed_within_minutes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    class Runner(web.AppRunner):
        def __init__(self, app: web.Application, **kwargs: Any) -> None:
            super().__init__(app, **kwargs)
            seen.update(kwargs)

        async def setup(self) -> None:
            raise _Stop

    monkeypatch.setattr(S.web, "AppRunner", Runner)
    gw = types.SimpleNamespace(start=lambda: None, metrics=S.GatewayMetrics())
    with pytest.raises(_Stop):
        asyncio.run(S.serve(gw, types.SimpleNamespace(home=tmp_path), "127.0.0.1", 0, 0, tls=object()))  # type: ignore[arg-type]
    assert seen["keepalive_timeout"] <= 120  # aiohttp's default is an hour


def test_a_status_look_up_that_cannot_have_the_audit_store_soon_is_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bus.gateway import tracking
    from bus.settings import Settings

    release, entered = threading.Event(), threading.Event()

    class SlowStore:
        def for_event(self, _event_id: str) -> list[dict[str, Any]]:
            entered.set()
            release.wait(30)  # a store that has stopped answering
            return []

        def close(self) -> None:
            pass

    monkeypatch.setattr(tracking, "open_audit_store", lambda _settings: SlowStore())
    (tmp_path / "audit.db").touch()
    reader = tracking.AuditReader(Settings(home=tmp_path, audit_db=tmp_path / "audit.db"))
    first = threading.Thread(target=reader, args=("5c1f9d3e-1111-4a2b-8c3d-000000000001",))
    first.start()
    assert entered.wait(10)
    try:
        with pytest.raises(tracking.AuditBusy):  # not queued behind the first for as long as it takes
            reader("5c1f9d3e-1111-4a2b-8c3d-000000000002")
    finally:
        release.set()
        first.join()


def test_policy_data_older_than_five_minutes_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.exceptions import PolicyUnavailable

    now, answers = [0.0], ["partnership"]

    def fetch(_opa: Any) -> tuple[Any, str, Any]:
        if not answers:
            raise PolicyUnavailable("OPA query failed: ClientConnectorError")
        return answers.pop(), "rev", "signers"

    monkeypatch.setattr(S, "fetch_policy_state", fetch)
    state = S.PolicyState(None, clock=lambda: now[0])  # type: ignore[arg-type]
    assert state.get() == ("partnership", "signers")
    now[0] = 60.0  # OPA gone: the last answer still serves a while
    assert state.get() == ("partnership", "signers")
    now[0] = 301.0
    with pytest.raises(PolicyUnavailable):
        state.get()
    now[0] = 302.0  # not due for another refresh: still refused, not served stale
    assert state.stale()
    with pytest.raises(PolicyUnavailable):
        state.get()
    with pytest.raises(PolicyUnavailable):
        state.get(unknown_key=True)
    answers.append("partnership again")  # OPA is back: served fresh at the next refresh
    now[0] = 340.0
    assert state.get() == ("partnership again", "signers") and not state.stale()


def test_a_batch_bigger_than_the_burst_is_charged_in_full() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=100, clock=lambda: now[0])
    published = 0
    while now[0] < 60:  # a sender that pays one token, sends a 500-event batch slowly, then the rest
        if limiter.take("p", 1) == 0:
            now[0] += 0.2
            if limiter.take("p", 499) == 0:
                published += 500
        now[0] += 0.5
    assert published <= 10 * 60 + 100 + 500  # the rate, one burst, and the batch that went into debt
