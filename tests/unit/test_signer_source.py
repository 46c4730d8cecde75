"""The signing key register ingest verifies against: re-read only when due, so that a batch
that needs no HTTP call takes no thread hop either."""

from __future__ import annotations

import pytest

from bus.app import SignerSource
from bus.exceptions import PolicyUnavailable
from bus.provenance.registry import SignerRegistry


def test_the_register_is_read_once_then_only_when_due_or_for_an_unknown_key(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("bus.app.time.monotonic", lambda: now[0])
    reads: list[float] = []

    def fetch() -> SignerRegistry:
        reads.append(now[0])
        return SignerRegistry()

    source = SignerSource(fetch, refresh_s=30.0, min_gap_s=2.0)
    assert source.due()
    first = source.refresh()
    assert reads == [1000.0] and not source.due() and source.registry is first
    now[0] += 1.0
    assert not source.due(unknown_key=True)  # within the minimum gap
    source.refresh(unknown_key=True)
    assert reads == [1000.0]
    now[0] += 1.5
    assert source.due(unknown_key=True) and not source.due()
    now[0] += 30.0
    assert source.due()
    source.refresh()
    assert len(reads) == 2 and not source.due()


def test_no_register_yet_holds_ingest_and_a_failed_reread_keeps_the_last() -> None:
    calls = {"n": 0}

    def fetch() -> SignerRegistry:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("OPA down")
        if calls["n"] == 3:
            raise OSError("OPA down again")
        return SignerRegistry()

    source = SignerSource(fetch, refresh_s=0.0, min_gap_s=0.0)
    with pytest.raises(PolicyUnavailable):
        source.refresh()
    assert source.due()  # nothing loaded: still due
    good = source.refresh()
    assert source.refresh() is good  # the third read failed: the last good register stays


def test_current_reads_in_a_thread_only_when_due() -> None:
    import asyncio
    import threading

    readers: list[str] = []

    def fetch() -> SignerRegistry:
        readers.append(threading.current_thread().name)
        return SignerRegistry()

    source = SignerSource(fetch, refresh_s=30.0)
    first = asyncio.run(source.current())
    assert len(readers) == 1 and readers[0] != threading.main_thread().name  # off the event loop's thread
    assert asyncio.run(source.current()) is first and len(readers) == 1  # not due: the register in hand


def test_a_register_opa_has_not_answered_for_five_minutes_holds_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key revoked while OPA's data endpoint is down must not pass for as long as the outage lasts."""
    import asyncio

    now = [1000.0]
    monkeypatch.setattr("bus.app.time.monotonic", lambda: now[0])
    up = {"opa": True}

    def fetch() -> SignerRegistry:
        if not up["opa"]:
            raise OSError("OPA down")
        return SignerRegistry()

    source = SignerSource(fetch, refresh_s=30.0)
    good = asyncio.run(source.current())
    up["opa"] = False
    now[0] += 120.0
    assert asyncio.run(source.current()) is good  # a short outage: the last register serves
    now[0] += 200.0
    with pytest.raises(PolicyUnavailable):
        asyncio.run(source.current())
    now[0] += 1.0  # not due again for 30 s: still refused, not served stale
    with pytest.raises(PolicyUnavailable):
        asyncio.run(source.current())
    up["opa"] = True
    now[0] += 30.0
    assert asyncio.run(source.current()) is not good and not source.stale()
