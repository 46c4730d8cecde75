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
        # A batch bigger than the burst passes once the bucket is full, and is charged in full: the
        # bucket goes into debt, so what follows waits until the batch's events are paid for
        # (charging only the burst let a slow sender publish far above the rate).
        if tokens >= min(cost, self.burst):
            self._buckets[partner] = (tokens - cost, now)
            return 0.0
        self._buckets[partner] = (tokens, now)
        return (min(cost, self.burst) - tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The Retry-After header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait_s)))
