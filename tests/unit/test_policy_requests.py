"""The requests the router sends OPA keep to the published input contract (PolicyInput)."""

from __future__ import annotations

from pathlib import Path

from bus.policy.data import load_partnership
from bus.pseudonymise.engine import free_text_fields
from bus.route import requests_for
from schemas.policy_input import PolicyEvent, PolicyInput
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth

REPO = Path(__file__).resolve().parents[2]


def test_every_request_matches_the_policy_input_contract_and_names_a_candidate() -> None:
    partnership = load_partnership(REPO / "policies" / "data")
    events = [parse_event_dict(raw) for raw in Synth(seed=5).stream(60)]
    pairs = requests_for(partnership, events)
    assert len(pairs) > len({e.event_id for e, _ in pairs}) > 20  # several recipients per event
    parsed = PolicyInput.model_validate({"today": "2026-01-01", "requests": [req for _, req in pairs]})
    with_free_text = 0
    for (event, sent), req in zip(pairs, parsed.requests, strict=True):
        assert sent["event"] == req.event.model_dump()  # the router's dict is the model, field for field
        assert list(sent["event"]) == list(PolicyEvent.model_fields)
        assert req.event.event_id == str(event.event_id)
        assert req.event.agency == event.source.agency.value
        assert partnership.partner(req.recipient) is not None
        free_text = free_text_fields(event.event_type)
        assert not free_text & req.event.attributes.keys()  # free text never reaches policy
        with_free_text += bool(free_text & getattr(event, "payload").model_dump().keys())  # noqa: B009
    assert with_free_text > 0
