"""Per-partner token buckets: each partner may publish `rate` events a second, in bursts of
up to `burst`; over that, 429 with how long to wait."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # partner -> (tokens, at)

    def take(self, partner: str, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 when allowed, else the seconds to wait before retrying."""
        now = self._clock()
        tokens, at = self._buckets.get(partner, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if cost > self.burst:  # a batch bigger than the burst can never pass: wait for a full bucket
            cost = self.burst
        if tokens >= cost:
            self._buckets[partner] = (tokens - cost, now)
            return 0.0
        self._buckets[partner] = (tokens, now)
        return (cost - tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The Retry-After header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait_s)))
