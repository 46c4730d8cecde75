"""Issue 19: ingest redacts only the free text some agreement may ask redacted; the rest is
sealed only (never in clear on sg.events), and route redacts it if a reloaded policy asks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bus.policy.data import load_partnership
from bus.policy.decision import Decision
from bus.pseudonymise.keyring import Keyring
from bus.route import Router
from schemas.synthetic import Synth
from tests.unit.test_ingest import _checked, signers  # noqa: F401 - the fixture is used by name

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")
KEYRING = Keyring.generate()
NAME = "Maximilian Featherstonehaugh"


def _with_a_name(event: dict[str, Any], field: str) -> dict[str, Any]:
    event["payload"][field] = f"Neighbour {NAME} called in after hearing shouting."
    return event


def _ingested(local: Any, events: list[dict[str, Any]]) -> list[Any]:
    from bus.ingest import pseudonymise_checked

    outcomes = pseudonymise_checked(_checked(local, events), KEYRING, PARTNERSHIP.redact_fields)
    assert all(o.event is not None for o in outcomes)
    return [o.event for o in outcomes]


def test_free_text_no_agreement_asks_redacted_is_sealed_only_and_never_in_clear(signers: Any) -> None:  # noqa: F811
    s = Synth(seed=8)
    assert PARTNERSHIP.redact_fields("police.domestic_abuse_incident.v1") == frozenset()
    event = _ingested(signers, [_with_a_name(s.domestic_abuse_incident(s.child()), "circumstances")])[0]
    assert "circumstances" not in event.payload and "circumstances" in event.unredacted
    assert "circumstances" in event.sealed_text
    assert NAME.split()[1] not in event.model_dump_json()


def test_free_text_an_agreement_asks_redacted_is_redacted_at_ingest(signers: Any) -> None:  # noqa: F811
    s = Synth(seed=8)
    assert "summary" in (PARTNERSHIP.redact_fields("police.exploitation_concern.v1") or ())
    event = _ingested(signers, [_with_a_name(s.exploitation_concern(s.child()), "summary")])[0]
    assert event.unredacted == [] and "summary" in event.payload
    assert NAME.split()[1] not in event.payload["summary"] and "[PERSON]" in event.payload["summary"]


class _AsksRedacted:
    """A reloaded policy that asks for the redacted copy of a field ingest only sealed."""

    async def decide_batch(self, requests: list[dict[str, Any]], today: str | None = None) -> list[Decision]:
        return [Decision.model_validate({
            "event_id": r["event"]["event_id"], "recipient": r["recipient"], "purpose": r["purpose"], "allow": True,
            "agreement": "DSA-NEW", "reasons": ["new"], "revision": "sha256:r", "fields": ["risk_grade"],
            "free_text": {"circumstances": "redact"}, "identifiers": {"nhs_number": "token"}}) for r in requests]


def _route(events: list[Any]) -> Any:
    router = Router(PARTNERSHIP, KEYRING, _AsksRedacted(), "sha256:r")  # type: ignore[arg-type]
    return asyncio.run(router.route_batch(events))


def test_route_redacts_on_demand_what_a_reloaded_policy_asks_redacted(signers: Any) -> None:  # noqa: F811
    s = Synth(seed=9)
    events = _ingested(signers, [_with_a_name(s.domestic_abuse_incident(s.child()), "circumstances")
                                 for _ in range(3)])
    plan = _route(events)
    assert plan.deliveries and not plan.failed
    for d in plan.deliveries:
        text = d.event.payload["circumstances"]
        assert NAME.split()[1] not in text and "shouting" in text


def test_a_text_route_cannot_redact_fails_its_view_and_is_never_sent_in_clear(signers: Any,  # noqa: F811
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from bus import route

    s = Synth(seed=10)
    events = _ingested(signers, [_with_a_name(s.domestic_abuse_incident(s.child()), "circumstances")])
    monkeypatch.setattr(route, "redact_each", lambda items: [None for _ in items])
    plan = _route(events)
    assert not plan.deliveries and plan.failed
    assert {a.decision for a in plan.audits} == {"view_failed"}
    assert NAME.split()[1] not in json.dumps([a.model_dump(mode="json") for a in plan.audits])


def test_without_a_redactor_route_holds_the_batch(signers: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from bus import route
    from bus.redaction.redactor import RedactorUnavailable

    s = Synth(seed=11)
    events = _ingested(signers, [_with_a_name(s.domestic_abuse_incident(s.child()), "circumstances")])

    def broken(items: Any) -> Any:
        raise RedactorUnavailable("the redactor cannot be built (ModelError)")

    monkeypatch.setattr(route, "redact_each", broken)
    with pytest.raises(RedactorUnavailable):
        _route(events)
