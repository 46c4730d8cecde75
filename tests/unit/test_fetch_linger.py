"""The fetch linger: a quiet bus's first record is fetched at once; while records flow, a fetch
waits a little for more."""

from __future__ import annotations

import asyncio
from typing import Any

from bus.fetch_linger import LINGER_MIN_BYTES, FetchLinger


class _Fetcher:
    """aiokafka's Fetcher as far as the linger touches it: the two request fields and the
    per-request coroutine, which says whether it added records."""

    def __init__(self, answers: list[bool]) -> None:
        self._fetch_min_bytes = 1
        self._fetch_max_wait_ms = 500
        self.answers = answers
        self.asked: list[tuple[int, int]] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: Any, request: Any) -> bool:
        self.asked.append((self._fetch_min_bytes, self._fetch_max_wait_ms))
        return self.answers.pop(0)


def _fetch_all(fetcher: _Fetcher) -> list[bool]:
    async def run() -> list[bool]:
        return [await fetcher._proc_fetch_request(None, 0, None) for _ in range(len(fetcher.answers))]

    return asyncio.run(run())


def test_the_first_fetch_and_each_after_an_empty_one_return_at_the_first_record() -> None:
    fetcher = _Fetcher([False, True, False, False])
    FetchLinger(fetcher, idle_wait_ms=100, linger_ms=20).install()
    _fetch_all(fetcher)
    # first, after an empty fetch, after records, after an empty one again
    assert fetcher.asked == [(1, 100), (1, 100), (LINGER_MIN_BYTES, 20), (1, 100)]


def test_while_records_flow_each_fetch_lingers_for_more() -> None:
    fetcher = _Fetcher([True, True, True])
    linger = FetchLinger(fetcher, idle_wait_ms=100, linger_ms=20).install()
    assert _fetch_all(fetcher) == [True, True, True]  # the wrapped answers pass through
    assert fetcher.asked == [(1, 100), (LINGER_MIN_BYTES, 20), (LINGER_MIN_BYTES, 20)]
    assert linger.lingering
    assert LINGER_MIN_BYTES > 64 * 1024  # many events' worth: the linger, not the size, decides


def test_a_zero_linger_keeps_aiokafkas_own_behaviour() -> None:
    fetcher = _Fetcher([True, True])
    FetchLinger(fetcher, idle_wait_ms=100, linger_ms=0).install()
    _fetch_all(fetcher)
    assert fetcher.asked == [(1, 100), (1, 100)]
