"""Fault injection for integration tests, outside the product: a worker started with this
directory on PYTHONPATH fails to route any batch holding one of the event ids in
SGBUS_TEST_FAULT_ROUTE_EVENT_IDS (comma-separated), as an unexpected bug would. Its error's
message quotes SGBUS_TEST_FAULT_QUOTE, as a bug's can quote the event it was handling."""

from __future__ import annotations

import os
from typing import Any

_IDS = frozenset(filter(None, os.environ.get("SGBUS_TEST_FAULT_ROUTE_EVENT_IDS", "").split(",")))
_QUOTE = os.environ.get("SGBUS_TEST_FAULT_QUOTE", "")

if _IDS:
    from bus.route import Router

    _route_batch = Router.route_batch

    async def _failing_route_batch(self: Router, events: list[Any], ahead: Any = None) -> Any:
        if any(str(e.event_id) in _IDS for e in events):
            raise RuntimeError(f"injected fault (tests/fault_shim) {_QUOTE}")
        return await _route_batch(self, events, ahead)

    Router.route_batch = _failing_route_batch  # type: ignore[method-assign]
