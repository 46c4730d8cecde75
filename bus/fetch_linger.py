"""Kafka fetches that answer at once on a quiet bus and gather records while records flow."""

from __future__ import annotations

from typing import Any

#: what a lingering fetch asks for before its wait is up: more than a few events' worth, so the
#: linger, not the size, decides when it returns (a backlog fills it at once)
LINGER_MIN_BYTES = 1 << 20


class FetchLinger:
    """Switch an aiokafka fetcher between two ways of asking the broker, after each response.

    - After a fetch that came back empty (a quiet bus), the next returns at the first record
      (min bytes 1), or after `idle_wait_ms` with nothing: the first event of a quiet spell is
      handed over at once, and an idle worker asks only every `idle_wait_ms`.
    - After a fetch that brought records, the next waits up to `linger_ms` for more.

    Why: with min bytes 1, every record written to any partition the worker reads (ingress, the
    `sg.events` it wrote itself, the audit records it sent) completed its fetch, and the worker
    sent the next at once: at 50 events/s about three fetches per event, each a TLS round trip
    through the broker and the consumer thread, on two cores shared by everything. A lingering
    fetch gathers what comes within `linger_ms` into one response.
    """

    def __init__(self, fetcher: Any, *, idle_wait_ms: int, linger_ms: int) -> None:
        self._fetcher = fetcher
        self.idle_wait_ms = idle_wait_ms
        self.linger_ms = linger_ms
        self.lingering = False

    def install(self) -> FetchLinger:
        """Wrap the fetcher's per-request coroutine (aiokafka 0.14: `_proc_fetch_request`, which
        returns true when it added records) and start as after an empty fetch."""
        inner = self._fetcher._proc_fetch_request

        async def fetch(assignment: Any, node_id: Any, request: Any) -> Any:
            added = await inner(assignment, node_id, request)
            self.after_fetch(bool(added))
            return added

        self._fetcher._proc_fetch_request = fetch
        self.after_fetch(False)
        return self

    def after_fetch(self, got_records: bool) -> None:
        """Set how the next request asks (aiokafka reads both fields whenever it builds one)."""
        self.lingering = got_records and self.linger_ms > 0
        if self.lingering:
            self._fetcher._fetch_min_bytes = LINGER_MIN_BYTES
            self._fetcher._fetch_max_wait_ms = self.linger_ms
        else:
            self._fetcher._fetch_min_bytes = 1
            self._fetcher._fetch_max_wait_ms = self.idle_wait_ms
