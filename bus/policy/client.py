"""Batched decisions from a remote OPA server; any failure fails closed (PolicyUnavailable)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
from opa_client.opa_async import AsyncOpaClient

from bus.concern.decide import ConcernDecision, bind_concern_decisions
from bus.exceptions import PolicyUnavailable
from bus.policy.decision import Decision, bind_decisions
from bus.policy.today import uk_today
from bus.security.opa_auth import OpaAccess

PACKAGE = "sgbus/share"
RULE = "decisions"


class _AsyncOpa(AsyncOpaClient):  # type: ignore[misc]  # untyped library
    """AsyncOpaClient that checks OPA's certificate against the partnership CA (the library
    only knows the system's default CAs)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, **kwargs: Any) -> None:
        super().__init__(ssl=ssl_context is not None, **kwargs)
        self._ssl_context = ssl_context

    async def _init_session(self) -> None:
        self._connector = aiohttp.TCPConnector(ssl=self._ssl_context if self._ssl_context else False)
        self._session = aiohttp.ClientSession(headers=self.headers, connector=self._connector,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout))


class PolicyClient:
    """One query for a whole batch of (event, recipient) requests."""

    def __init__(self, access: OpaAccess, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._client = _AsyncOpa(access.ssl_context(), host=access.host, port=access.port, timeout=timeout_s,
                                 retries=0, token=access.token)
        self._open = False

    async def _ensure_open(self) -> None:
        if not self._open:
            await self._client._init_session()
            self._open = True

    async def close(self) -> None:
        if self._open:
            await self._client.close_connection()
            self._open = False

    async def healthy(self) -> bool:
        await self._ensure_open()
        return bool(await self._client.check_health())

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        """Decisions in request order. Raises PolicyUnavailable on any error, timeout or
        malformed answer, so the caller shares nothing and retries later."""
        if not requests:
            return []
        today = today or uk_today().isoformat()
        try:
            await self._ensure_open()
            answer = await asyncio.wait_for(
                self._client.query_rule({"today": today, "requests": requests}, PACKAGE, RULE),
                timeout=self._timeout_s * 2,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # aiohttp and the client raise many unrelated types
            raise PolicyUnavailable(f"OPA query failed: {type(exc).__name__}") from None
        result = answer.get("result") if isinstance(answer, dict) else None
        return bind_decisions(requests, result)

    async def concern_decisions(self, children: list[dict[str, Any]], rule_ids: list[str]) -> list[ConcernDecision]:
        """Which children cross which concern rules now, and which to raise (data.sgbus.concern).
        Raises PolicyUnavailable on any error or an answer that does not match the question."""
        if not children:
            return []
        try:
            await self._ensure_open()
            answer = await asyncio.wait_for(
                self._client.query_rule({"children": children}, "sgbus/concern", RULE), timeout=self._timeout_s * 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # aiohttp and the client raise many unrelated types
            raise PolicyUnavailable(f"OPA concern query failed: {type(exc).__name__}") from None
        result = answer.get("result") if isinstance(answer, dict) else None
        return bind_concern_decisions(children, rule_ids, result)
