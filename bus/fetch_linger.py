"""Kafka fetches that answer at once on a quiet bus and gather records while records flow."""

from __future__ import annotations

from typing import Any

#: what a lingering fetch asks for before its wait is up: more than a few events' worth, so the
#: linger, not the size, decides when it returns (a backlog fills it at once)
LINGER_MIN_BYTES = 1 << 20


class FetchLinger:
    """How each fetch asks its broker, from what that broker's previous fetch brought.

    - After a fetch that came back empty (a quiet bus), the next to that broker returns at the
      first record (min bytes 1), or after the consumer's own wait with nothing: the first event
      of a quiet spell is handed over at once, and an idle worker asks no more often than before.
    - After a fetch that brought records, the next waits up to `linger_ms` for more.

    Why: with min bytes 1, every record written to any partition the worker reads (ingress, the
    `sg.events` it wrote itself, the audit records it sent) completed its fetch, and the worker
    sent the next at once: at 50 events/s about three fetches per event, each a TLS round trip
    through the broker and the consumer thread, on two cores shared by everything. A lingering
    fetch gathers what comes within `linger_ms` into one response.

    aiokafka (0.14) builds one request per broker node, sent by `Fetcher._proc_fetch_request`,
    which returns true when it added records (also after some errors: then one fetch lingers
    needlessly, no longer than `linger_ms`). The request is encoded only when sent, so the wrapper
    sets its wait and minimum just before; each node keeps its own state.
    """

    def __init__(self, fetcher: Any, *, linger_ms: int) -> None:
        self._fetcher = fetcher
        self.linger_ms = linger_ms
        self.lingering: set[Any] = set()  # the nodes whose last fetch brought records

    def install(self) -> FetchLinger:
        inner = self._fetcher._proc_fetch_request

        async def fetch(assignment: Any, node_id: Any, request: Any) -> Any:
            if node_id in self.lingering:
                request._min_bytes, request._max_wait_ms = LINGER_MIN_BYTES, self.linger_ms
            added = await inner(assignment, node_id, request)
            if added and self.linger_ms > 0:
                self.lingering.add(node_id)
            else:
                self.lingering.discard(node_id)
            return added

        self._fetcher._proc_fetch_request = fetch
        return self
