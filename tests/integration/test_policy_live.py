"""Policies on the running stack: reload without restarting the worker, and emergency overrides."""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bus.policy.client import PolicyClient
from bus.policy.data import load_partnership
from bus.policy.decision import Decision
from bus.policy.loader import fetch_partnership
from bus.pseudonymise.keyring import load_keyring
from bus.route import Router, requests_for
from bus.security.opa_auth import OpaAccess
from bus.topics import deliver_topic
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised, wait_for
from tests.integration.conftest import REPO, Bus


def _reload(bus: Bus, policies: Path) -> str:
    env = {**os.environ, "SGBUS_HOME": str(bus.settings.home), "SGBUS_POLICIES_DIR": str(policies)}
    result = subprocess.run([sys.executable, "-m", "bus", "policy", "reload"], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    match = re.search(r"loaded revision (sha256:[0-9a-f]+)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_reloaded_agreement_is_applied_by_the_running_worker(bus: Bus, tmp_path: Path) -> None:
    proposed = tmp_path / "policies"
    shutil.copytree(REPO / "policies", proposed)
    agreements = proposed / "data" / "agreements.yaml"
    text = agreements.read_text()
    narrowed = text.replace("free_text: {circumstances: reveal, child_voice: reveal}", "free_text: {}")
    assert narrowed != text
    agreements.write_text(narrowed)
    new_revision = _reload(bus, proposed)
    try:
        s = Synth(seed=41)
        event = s.domestic_abuse_incident(s.child(min_age=5))
        bus.publish([event])
        audits = {a["recipient"]: a for a in bus.audits_for({event["event_id"]}, 4)}
        csc = audits["northshire-csc"]
        assert csc["policy_revision"] == new_revision
        assert "circumstances" not in csc["fields_shared"] and "child_voice" not in csc["fields_shared"]
        copy = wait_for(lambda: [r for r in bus.records(deliver_topic("northshire-csc"))
                                 if r["event_id"] == event["event_id"]], 30, what="delivery")[0]
        assert "circumstances" not in copy["payload"]
        assert copy["sharing"]["policy_revision"] == new_revision
    finally:
        original = _reload(bus, REPO / "policies")
    assert original != new_revision


def test_emergency_override_widens_sharing_to_local_social_care_only_and_is_audited(bus: Bus) -> None:
    bus.ensure_declarers()
    signers = bus.signers
    before = bus.metric("sgbus_policy_overrides_total")
    s = Synth(seed=42)
    event = s.domestic_abuse_incident(s.child(min_age=5), school_urn="900001")
    event["urgency"] = {
        "urgent_risk_of_significant_harm": True,
        "justification": "Threats to kill made in front of the child; weapon not recovered.",
        "declared_by_role": "duty inspector",
    }
    event = signers.declare(event, "duty inspector")
    bus.publish([event])
    audits = {a["recipient"]: a for a in bus.audits_for({event["event_id"]}, 4)}
    csc = audits["northshire-csc"]
    assert csc["override"] is True and csc["decision"] == "allow"
    assert set(csc["override_justification"]) == {"kid", "nonce", "ct"}  # sealed: no free text in the audit
    assert csc["identifier_modes"]["nhs_number"] == "reveal"
    assert audits["southshire-csc"]["decision"] == "deny" and audits["southshire-csc"]["override"] is False
    assert audits["oakfield-primary"]["override"] is False
    copy = wait_for(lambda: [r for r in bus.records(deliver_topic("northshire-csc"))
                             if r["event_id"] == event["event_id"]], 30, what="delivery")[0]
    assert copy["sharing"]["override"] is True
    # DSA-OE-002 itself reveals the free text to the MASH, so every field arrives here
    assert set(copy["payload"]) == set(event["payload"])
    assert copy["subject"]["identifiers"]["nhs_number"] == event["subject"]["identifiers"]["nhs_number"]
    wait_for(lambda: bus.metric("sgbus_policy_overrides_total") >= before + 1, 30, what="override counted")


class _CountingClient(PolicyClient):
    """The real client against the stack's OPA, counting the requests in each query."""

    def __init__(self, access: OpaAccess) -> None:
        super().__init__(access)
        self.queries: list[int] = []

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        self.queries.append(len(requests))
        return await super().decide_batch(requests, today)


def test_a_large_batch_is_decided_in_queries_of_batch_size_events_with_the_same_decisions(bus: Bus) -> None:
    keyring = load_keyring(bus.settings.keyring_path)
    partnership = load_partnership(REPO / "policies" / "data")
    events = []
    for raw in Synth(seed=43).stream(40):
        event = pseudonymised(parse_event_dict(raw), keyring)
        if requests_for(partnership, [event]):  # someone subscribes to it
            events.append(event)
    assert len(events) > 30

    async def decide(query_events: int) -> tuple[list[Any], list[int]]:
        client = _CountingClient(bus.opa("worker"))
        try:
            plan = await Router(partnership, keyring, client, revision, query_events=query_events).route_batch(events)
        finally:
            await client.close()
        audits = [(a.event_id, a.recipient, a.decision, a.agreement, a.fields_shared) for a in plan.audits]
        return audits, client.queries

    _, revision = fetch_partnership(bus.opa("worker"))
    whole, one_query = asyncio.run(decide(1000))
    split, queries = asyncio.run(decide(7))
    assert len(one_query) == 1 and len(queries) == math.ceil(len(events) / 7)
    assert all(0 < q for q in queries)
    assert sum(queries) == one_query[0] == len(whole) > 40
    assert split == whole


def test_the_decision_cache_gives_the_same_deliveries_and_audit_decisions_as_asking_opa_every_time(bus: Bus) -> None:
    """Issue 19: a fixed synthetic set routed by the stack's OPA with and without the cache, in
    batches as the worker takes them: the same decisions, audit records and partner copies."""
    from bus.policy.cache import DecisionCache

    keyring = load_keyring(bus.settings.keyring_path)
    partnership = load_partnership(REPO / "policies" / "data")
    events = [e for e in (pseudonymised(parse_event_dict(raw), keyring) for raw in Synth(seed=44).stream(600))
              if requests_for(partnership, [e])]
    assert len(events) > 300

    async def route(cache: DecisionCache | None) -> tuple[list[Any], list[Any], int, list[int]]:
        client = _CountingClient(bus.opa("worker"))
        router = Router(partnership, keyring, client, revision, cache=cache)
        try:
            plans = [await router.route_batch(events[i:i + 50]) for i in range(0, len(events), 50)]
        finally:
            await client.close()
        # ids and times are fresh per record; a sealed justification has a fresh nonce
        audits = [a.model_dump(exclude={"audit_id", "decided_at", "override_justification"})
                  for p in plans for a in p.audits]
        copies = [(d.topic, d.key, d.event.model_dump(exclude={"sharing": {"delivered_at"}}))
                  for p in plans for d in p.deliveries]
        return audits, copies, sum(p.cache_hits for p in plans), client.queries

    _, revision = fetch_partnership(bus.opa("worker"))
    audits, copies, no_hits, asked_every_time = asyncio.run(route(None))
    cached_audits, cached_copies, hits, asked_with_cache = asyncio.run(route(DecisionCache()))
    assert no_hits == 0 and hits > 0.8 * len(audits)
    assert sum(asked_with_cache) < 0.2 * sum(asked_every_time)
    assert cached_audits == audits and len(audits) > 400
    differ = [(a, b) for a, b in zip(cached_copies, copies, strict=True) if a != b]
    assert not differ, [{k: (v, b[2][k]) for k, v in a[2].items() if v != b[2][k]} for a, b in differ[:1]]
    assert len(copies) > 300
