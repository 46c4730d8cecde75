"""The at-least-once send ledger: a commit must not pass a send the broker refused."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from bus.agents import sends
from bus.agents.sends import SendLedger, send_dead_letter
from bus.records import DeadLetter


async def _futures(n: int) -> list[asyncio.Future[object]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


def test_delivered_sends_pass_and_in_flight_ones_wait_for_the_next_commit() -> None:
    async def run() -> None:
        ledger = SendLedger()
        done, later = await _futures(2)
        ledger.track("sg.events", done)
        ledger.track("sg.audit", later)
        done.set_result("metadata")
        assert ledger.failure() is None
        later.set_exception(RuntimeError("TopicAuthorizationFailedError"))
        assert ledger.failure() == ("sg.audit", later.exception())  # noticed at the next commit

    asyncio.run(run())


def test_the_first_refused_send_is_reported_and_stays_reported() -> None:
    async def run() -> None:
        ledger = SendLedger()
        first, second, ok = await _futures(3)
        for topic, fut in (("sg.deliver.a", first), ("sg.deliver.b", second), ("sg.events", ok)):
            ledger.track(topic, fut)
        first.set_exception(ValueError("refused"))
        second.cancel()
        ok.set_result(None)
        failed = ledger.failure()
        assert failed is not None and failed[0] == "sg.deliver.a" and isinstance(failed[1], ValueError)
        assert ledger.failure() == failed  # a later commit is refused too

    asyncio.run(run())


def test_a_cancelled_send_counts_as_not_written() -> None:
    async def run() -> None:
        ledger = SendLedger()
        (fut,) = await _futures(1)
        ledger.track("sg.deliver.a", fut)
        fut.cancel()
        failed = ledger.failure()
        assert failed is not None and isinstance(failed[1], asyncio.CancelledError)

    asyncio.run(run())


def test_exactly_once_sends_return_nothing_to_track() -> None:
    ledger = SendLedger()
    ledger.track("sg.events", None)
    assert ledger.failure() is None and not ledger._pending


def test_a_long_run_without_commits_forgets_delivered_sends_but_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sends, "_PRUNE_AT", 10)

    async def run() -> None:
        ledger = SendLedger()
        futs = await _futures(25)
        futs[3].set_exception(OSError("refused"))
        for i, fut in enumerate(futs):
            if i != 3:
                fut.set_result(None)
            ledger.track(f"t{i}", fut)
        assert len(ledger._pending) < 10
        assert ledger.failure() is not None and ledger.failure()[0] == "t3"  # type: ignore[index]

    asyncio.run(run())


def test_an_exactly_once_batch_waits_for_its_sends_and_names_the_first_refused_one() -> None:
    from bus.agents.sends import BatchSends

    async def run() -> None:
        batch = BatchSends()
        written, refused, late = await _futures(3)
        batch.track("sg.deliver.oakfield-primary", refused)
        batch.track("sg.audit", written)
        batch.track("sg.dlq", late)
        batch.track("sg.events", None)  # not a future: nothing to wait for
        loop = asyncio.get_running_loop()
        written.set_result("metadata")
        refused.set_exception(RuntimeError("MessageSizeTooLargeError"))
        loop.call_later(0.05, late.set_result, "metadata")  # still in flight when the commit asks
        failed = await batch.failure()
        assert late.done()  # waited for, not skipped
        assert failed == ("sg.deliver.oakfield-primary", refused.exception())
        assert await batch.failure() is None  # the next batch starts afresh

    asyncio.run(run())


def test_an_exactly_once_batch_whose_sends_were_all_written_may_commit() -> None:
    from bus.agents.sends import BatchSends

    async def run() -> None:
        batch = BatchSends()
        assert await batch.failure() is None  # nothing sent
        (fut,) = await _futures(1)
        batch.track("sg.events", fut)
        fut.set_result("metadata")
        assert await batch.failure() is None

    asyncio.run(run())


def _dead_letter(reasons: int) -> DeadLetter:
    return DeadLetter(dlq_id=uuid.uuid4(), stage="ingest", topic="sg.ingress.police", partition=2, offset=41,
                      event_id=None, event_type=None, rejected_at=datetime.now(UTC),
                      reasons=[{"field": f"payload.f{i}", "code": "missing", "message": "Field required"}
                               for i in range(reasons)])


def test_a_dead_letter_refused_at_once_goes_again_cut_to_its_position_and_first_reason() -> None:
    """The broker refusing a dead letter (too large for sg.dlq) must not drop the rejected event's
    trace: its position and first reason go, with why it was cut."""
    sent: list[tuple[bytes, bytes]] = []

    async def send(key: bytes, value: bytes) -> None:
        if not sent and len(value) > 1_000:
            sent.append((b"refused", b""))
            raise RuntimeError("MessageSizeTooLarge: the message is 1,048,600 bytes")
        sent.append((key, value))

    dl = _dead_letter(21)
    asyncio.run(send_dead_letter(send, dl))
    assert len(sent) == 2 and sent[1][0] == str(dl.dlq_id).encode()
    again = DeadLetter.model_validate_json(sent[1][1])
    assert (again.topic, again.partition, again.offset) == ("sg.ingress.police", 2, 41)
    assert again.reasons == [dl.reasons[0], {"field": "$", "code": "dead_letter_shortened", "message": "RuntimeError"}]
    assert "1,048,600" not in sent[1][1].decode()  # the error's type only


def test_a_dead_letter_sent_whole_is_sent_once_and_one_refused_twice_stops_the_batch() -> None:
    calls: list[bytes] = []

    async def accept(key: bytes, value: bytes) -> None:
        calls.append(value)

    asyncio.run(send_dead_letter(accept, _dead_letter(2)))
    assert len(calls) == 1 and len(DeadLetter.model_validate_json(calls[0]).reasons) == 2

    async def refuse(key: bytes, value: bytes) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError, match="broker down"):
        asyncio.run(send_dead_letter(refuse, _dead_letter(2)))
