"""The fetch linger: a quiet bus's first record is fetched at once; while records flow, a fetch
waits a little for more; each broker by its own traffic."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

from bus.fetch_linger import LINGER_MIN_BYTES, FetchLinger

IDLE = (1, 100)  # the consumer's own: min bytes 1, its fetch wait
LINGER = (LINGER_MIN_BYTES, 20)


class _Fetcher:
    """aiokafka's Fetcher as far as the linger touches it: the per-request coroutine, which is
    handed a built (not yet encoded) request and says whether it added records."""

    def __init__(self, answers: dict[int, list[bool]]) -> None:
        self.answers = answers
        self.asked: dict[int, list[tuple[int, int]]] = {node: [] for node in answers}

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: FetchRequest) -> bool:
        self.asked[node_id].append((request._min_bytes, request._max_wait_ms))
        return self.answers[node_id].pop(0)


def _fetch(fetcher: _Fetcher, nodes: list[int]) -> list[bool]:
    async def run() -> list[bool]:
        # as aiokafka builds each request: from the consumer's own settings
        return [await fetcher._proc_fetch_request(None, node, FetchRequest(100, 1, 52428800, 0, []))
                for node in nodes]

    return asyncio.run(run())


def test_the_first_fetch_and_each_after_an_empty_one_return_at_the_first_record() -> None:
    fetcher = _Fetcher({1: [False, True, False, False]})
    FetchLinger(fetcher, linger_ms=20).install()
    _fetch(fetcher, [1, 1, 1, 1])
    # first, after an empty fetch, after records, after an empty one again
    assert fetcher.asked[1] == [IDLE, IDLE, LINGER, IDLE]


def test_while_records_flow_each_fetch_lingers_for_more() -> None:
    fetcher = _Fetcher({1: [True, True, True]})
    FetchLinger(fetcher, linger_ms=20).install()
    assert _fetch(fetcher, [1, 1, 1]) == [True, True, True]  # the wrapped answers pass through
    assert fetcher.asked[1] == [IDLE, LINGER, LINGER]
    assert LINGER_MIN_BYTES > 64 * 1024  # many events' worth: the linger, not the size, decides


def test_each_broker_lingers_by_its_own_traffic() -> None:
    # node 1 busy, node 2 quiet: the quiet one's empty answers do not stop node 1 lingering,
    # and node 1's records do not make node 2 ask more often than the consumer's own wait
    fetcher = _Fetcher({1: [True, True, True], 2: [False, False, False]})
    FetchLinger(fetcher, linger_ms=20).install()
    _fetch(fetcher, [1, 2, 1, 2, 1, 2])
    assert fetcher.asked[1] == [IDLE, LINGER, LINGER]
    assert fetcher.asked[2] == [IDLE, IDLE, IDLE]


def test_a_zero_linger_keeps_aiokafkas_own_behaviour() -> None:
    fetcher = _Fetcher({1: [True, True]})
    FetchLinger(fetcher, linger_ms=0).install()
    _fetch(fetcher, [1, 1])
    assert fetcher.asked[1] == [IDLE, IDLE]
