"""Webhook delivery: HTTPS POST with HMAC-SHA256 signature and timestamp headers.

5xx answers, timeouts and connection errors are retried with exponential backoff and full
jitter, for as long as it takes (nothing is lost); a 4xx answer is final and the event goes
to sg.dlq with the status. Events are posted one at a time in partition order, so one
child's events (same key, same partition) arrive in order.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Callable, Iterator

import httpx

from connectors.delivery.base import Rejected


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `<timestamp>.<body>`; receivers recompute it and check the time."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def backoff_delays(base_s: float = 0.2, cap_s: float = 30.0, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**n))."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap_s, base_s * 2 ** attempt))
        attempt += 1


class WebhookSink:
    def __init__(self, url: str, secret: bytes, *, timeout_s: float = 10.0, base_backoff_s: float = 0.2,
                 max_backoff_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 name: str = "webhook", on_retry: Callable[[str], None] = lambda _reason: None) -> None:
        self.name = name  # also names the consumer group and the dedupe store
        self.url = url
        self.secret = secret
        self.client = httpx.Client(timeout=timeout_s)
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.attempts = 0
        self.on_retry = on_retry  # told why an attempt failed (unreachable, server_error, throttled)

    def deliver(self, event_id: str, body: bytes) -> None:
        delays = backoff_delays(self.base_backoff_s, self.max_backoff_s)
        while True:
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Sgbus-Event-Id": event_id,
                "X-Sgbus-Timestamp": timestamp,
                "X-Sgbus-Signature": signature(self.secret, timestamp, body),
            }
            self.attempts += 1
            try:
                response = self.client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError:
                self.on_retry("unreachable")
                self.sleep(next(delays))  # timeout or connection failure: retry
                continue
            if response.status_code < 300:
                return
            if 300 <= response.status_code < 500 and response.status_code not in (408, 429):
                # 3xx too: redirects are not followed (the endpoint is agreed, not discovered), and
                # retrying one for ever would stall the partner's queue with no dead letter.
                raise Rejected(f"partner answered HTTP {response.status_code}", response.status_code)
            self.on_retry("throttled" if response.status_code == 429 else "server_error")
            self.sleep(next(delays))  # 5xx, 408, 429: retry

    def flush(self) -> None:
        return None
