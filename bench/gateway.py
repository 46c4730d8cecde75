"""Benchmark phase: publishing through the HTTPS gateway (mutual TLS, every check, acks=all):
latency at a steady offered rate, and throughput for single and batched publishing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.load import Prepared, percentile
from bus.demo import start_gateway, stop_worker
from bus.gateway.client import tls_context
from bus.gateway.identity import PartnerCerts
from bus.policy.data import Partnership
from bus.security.pki import ca_path
from bus.settings import Settings


def _by_partner(partnership: Partnership, records: list[Prepared]) -> list[tuple[str, Prepared]]:
    out = []
    for rec in records:
        source = json.loads(rec.value)["source"]
        partner = partnership.partner_for_source(source["agency"], source["org_id"])
        if partner is not None:
            out.append((partner.id, rec))
    return out


class _Clients:
    def __init__(self, home: Path, url: str, partners: set[str]) -> None:
        certs = PartnerCerts(home)
        self.clients = {}
        for partner in sorted(partners):
            cert = certs.local(partner) or certs.issue(partner)[0]
            self.clients[partner] = httpx.AsyncClient(
                base_url=url, verify=tls_context(cert, ca_path(home)), timeout=60,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


async def _one(client: httpx.AsyncClient, rec: Prepared) -> tuple[float, int]:
    began = time.perf_counter()
    response = await client.post("/v1/events", content=rec.value, headers={"content-type": "application/json"})
    return time.perf_counter() - began, response.status_code


async def _paced(clients: _Clients, work: list[tuple[str, Prepared]], rate: float) -> dict[str, Any]:
    started = time.perf_counter()
    tasks = []
    for i, (partner, rec) in enumerate(work):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(clients.clients[partner], rec)))
    results = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies = [1000 * r[0] for r in results]
    return {"offered_per_s": rate, "events": len(work), "accepted": sum(1 for r in results if r[1] == 202),
            "achieved_per_s": round(len(work) / elapsed, 1), "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1)}


async def _flat_out(clients: _Clients, work: list[tuple[str, Prepared]], in_flight: int) -> dict[str, Any]:
    queue = list(reversed(work))
    statuses: list[int] = []
    latencies: list[float] = []

    async def runner() -> None:
        while queue:
            partner, rec = queue.pop()
            seconds, status = await _one(clients.clients[partner], rec)
            latencies.append(1000 * seconds)
            statuses.append(status)

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    return {"events": len(work), "in_flight": in_flight, "accepted": statuses.count(202),
            "events_per_s": round(len(work) / elapsed, 1), "p99_ms": round(percentile(latencies, 99), 1)}


async def _batched(clients: _Clients, work: list[tuple[str, Prepared]], size: int, in_flight: int) -> dict[str, Any]:
    groups: dict[str, list[Prepared]] = {}
    for partner, rec in work:
        groups.setdefault(partner, []).append(rec)
    batches = [(p, recs[i:i + size]) for p, recs in groups.items() for i in range(0, len(recs), size)]
    accepted = 0

    async def runner() -> None:
        nonlocal accepted
        while batches:
            partner, recs = batches.pop()
            body = b'{"events": [' + b",".join(r.value for r in recs) + b"]}"
            response = await clients.clients[partner].post("/v1/events:batch", content=body,
                                                           headers={"content-type": "application/json"})
            if response.status_code == 200:
                accepted += int(response.json()["accepted"])

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    return {"events": len(work), "batch_size": size, "in_flight": in_flight, "accepted": accepted,
            "events_per_s": round(len(work) / elapsed, 1)}


def run_gateway(home: Path, policies_dir: Path, partnership: Partnership, paced: list[Prepared], rate: float,
                single: list[Prepared], batched: list[Prepared], progress: Callable[[str], None],
                cpu_seconds: Callable[[int], float]) -> dict[str, Any]:
    """Start `sgbus gateway` on the running stack and measure it (nothing consumes meanwhile)."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per request
    settings = Settings(home=home, policies_dir=policies_dir)
    # As many events a second as the flat-out phases offer: the rate limit is not what is measured.
    proc, url = start_gateway(settings, home / "bench-gateway.log",
                              env={"SGBUS_GATEWAY_RATE": "100000", "SGBUS_GATEWAY_BURST": "100000",
                                   "SGBUS_LOG_LEVEL": "warning"})
    try:
        work = {name: _by_partner(partnership, recs)
                for name, recs in (("paced", paced), ("single", single), ("batched", batched))}
        clients = _Clients(home, url, {p for w in work.values() for p, _ in w})

        async def all_phases() -> dict[str, Any]:
            try:
                await _flat_out(clients, work["paced"][:50], 4)  # warm-up: TLS sessions, policy state
                cpu_before = cpu_seconds(proc.pid)
                progress(f"  {rate:.0f} events/s offered for {len(work['paced']) / rate:.0f} s ...")
                steady = await _paced(clients, work["paced"], rate)
                steady["gateway_cpu_share"] = round(
                    (cpu_seconds(proc.pid) - cpu_before) / (len(work["paced"]) / rate), 3)
                progress(f"  p50 {steady['p50_ms']} ms, p99 {steady['p99_ms']} ms")
                progress(f"  flat out, one event per request, {len(work['single']):,} events ...")
                flat = await _flat_out(clients, work["single"], 32)
                progress(f"  {flat['events_per_s']:,} events/s")
                progress(f"  flat out, batches of 100, {len(work['batched']):,} events ...")
                batch = await _batched(clients, work["batched"], 100, 4)
                progress(f"  {batch['events_per_s']:,} events/s")
                return {"paced": steady, "single": flat, "batched": batch}
            finally:
                await clients.close()

        return asyncio.run(all_phases())
    finally:
        stop_worker(proc)
