"""Each decision is bound to the request it answers; any other answer fails the batch closed
(issue 13: decisions matched by position went wherever the answer pointed)."""

from __future__ import annotations

from typing import Any

import pytest

from bus.exceptions import PolicyUnavailable
from bus.policy.decision import bind_decisions


def _request(event_id: str, recipient: str, purpose: str = "child-protection") -> dict[str, Any]:
    return {"event": {"event_id": event_id}, "recipient": recipient, "purpose": purpose}


def _answer(req: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"event_id": req["event"]["event_id"], "recipient": req["recipient"], "purpose": req["purpose"],
            "allow": True, "agreement": "DSA-X", "reasons": ["DSA-X allows"], "revision": "sha256:r", **overrides}


REQUESTS = [_request("e1", "northshire-csc"), _request("e1", "oakfield-primary", "operation-encompass"),
            _request("e2", "northshire-nhs-uec"), _request("e3", "riverside-academy", "operation-encompass")]


def test_an_answer_that_matches_every_request_is_bound_in_order() -> None:
    decisions = bind_decisions(REQUESTS, [_answer(r) for r in REQUESTS])
    assert [(d.event_id, d.recipient) for d in decisions] == [("e1", "northshire-csc"), ("e1", "oakfield-primary"),
                                                             ("e2", "northshire-nhs-uec"),
                                                             ("e3", "riverside-academy")]


def test_four_requests_answered_with_one_schools_id_share_nothing() -> None:
    forged = [_answer(r, recipient="oakfield-primary") for r in REQUESTS]
    with pytest.raises(PolicyUnavailable, match="another request"):
        bind_decisions(REQUESTS, forged)


@pytest.mark.parametrize("allow", ["yes", 1, "true", None])
def test_a_non_boolean_allow_is_malformed_not_a_share(allow: object) -> None:
    with pytest.raises(PolicyUnavailable, match="malformed decision at position 0 \\(allow\\)"):
        bind_decisions(REQUESTS[:1], [_answer(REQUESTS[0], allow=allow)])


@pytest.mark.parametrize("answer", [[], None, {"decisions": []}], ids=["empty", "none", "object"])
def test_a_missing_answer_fails_closed(answer: object) -> None:
    with pytest.raises(PolicyUnavailable, match="exactly one decision per request"):
        bind_decisions(REQUESTS, answer)


def test_a_missing_or_extra_decision_fails_closed() -> None:
    answers = [_answer(r) for r in REQUESTS]
    with pytest.raises(PolicyUnavailable, match="exactly one"):
        bind_decisions(REQUESTS, answers[:-1])
    with pytest.raises(PolicyUnavailable, match="exactly one"):
        bind_decisions(REQUESTS, [*answers, answers[0]])


def test_reordered_decisions_are_not_matched_by_position() -> None:
    answers = [_answer(r) for r in REQUESTS]
    answers[0], answers[2] = answers[2], answers[0]
    with pytest.raises(PolicyUnavailable, match="position 0 answers another request"):
        bind_decisions(REQUESTS, answers)


@pytest.mark.parametrize("overrides", [{"recipient": "*"}, {"event_id": "*"}, {"purpose": "any"}],
                         ids=["wildcard-recipient", "wildcard-event", "other-purpose"])
def test_wildcards_and_other_purposes_fail_closed(overrides: dict[str, str]) -> None:
    with pytest.raises(PolicyUnavailable, match="another request"):
        bind_decisions(REQUESTS[:1], [_answer(REQUESTS[0], **overrides)])


@pytest.mark.parametrize("overrides", [{"identifiers": {"nhs_number": "show"}}, {"demographics": {"dob": "all"}},
                                       {"override": "yes"}, {"retention_days": -1}, {"reasons": []}])
def test_unknown_modes_and_malformed_fields_fail_closed(overrides: dict[str, Any]) -> None:
    with pytest.raises(PolicyUnavailable, match="malformed decision"):
        bind_decisions(REQUESTS[:1], [_answer(REQUESTS[0], **overrides)])


def test_the_error_never_carries_the_answers_values() -> None:
    with pytest.raises(PolicyUnavailable) as caught:
        bind_decisions(REQUESTS[:1], [_answer(REQUESTS[0], recipient="9434765919-leaked")])
    assert "9434765919" not in str(caught.value) and "e1" not in str(caught.value)
