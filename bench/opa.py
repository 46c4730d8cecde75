"""Decisions per second from the real OPA server: one request per query vs batched queries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.policy.client import PolicyClient
from bus.policy.data import load_partnership
from bus.route import requests_for
from bus.security.opa_auth import OpaAccess
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth


@dataclass(frozen=True)
class OpaResult:
    batch_size: int
    queries: int
    decisions: int
    seconds: float

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    @property
    def ms_per_query(self) -> float:
        return 1000 * self.seconds / self.queries if self.queries else 0.0


def sample_requests(policies_dir: Path, count: int = 2000, seed: int = 1) -> list[dict[str, Any]]:
    """Realistic policy requests: synthetic events of subscribed types x their candidates."""
    partnership = load_partnership(policies_dir / "data")
    subscribed = sorted({t for s in partnership.subscriptions for t in s.event_types})
    synth = Synth(seed=seed)
    events = [parse_event_dict(synth.event(subscribed[i % len(subscribed)])) for i in range(count)]
    return [req for _, req in requests_for(partnership, events)][:count]


async def _run(opa: OpaAccess, requests: list[dict[str, Any]], batch_size: int, seconds: float) -> OpaResult:
    client = PolicyClient(opa, timeout_s=30)
    try:
        await client.decide_batch(requests[:batch_size])  # warm the connection and OPA's caches
        queries = decisions = 0
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            batch = requests[i:i + batch_size]
            if len(batch) < batch_size:
                i, batch = 0, requests[:batch_size]
            result = await client.decide_batch(batch)
            decisions += len(result)
            queries += 1
            i += batch_size
        return OpaResult(batch_size, queries, decisions, time.perf_counter() - start)
    finally:
        await client.close()


def bench_opa(opa: OpaAccess, policies_dir: Path, batch_sizes: list[int], seconds: float = 3.0) -> list[OpaResult]:
    """Queries as the worker (its token, over TLS): the same checks as the worker pays."""
    requests = sample_requests(policies_dir, count=max(2000, max(batch_sizes)))
    return [asyncio.run(_run(opa, requests, b, seconds)) for b in batch_sizes]
