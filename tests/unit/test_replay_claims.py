"""`sgbus replay --failed` takes nothing from sg.dlq on trust (several principals write it, a
partner's delivery connector among them): what its dead letters may make it read and replay."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from bus.agents.replays import resolve
from bus.pseudonymise.keyring import Keyring
from bus.records import PseudonymisedEvent, ReplayRequest
from bus.replay import failed_shares
from bus.replay_proofs import proven, replay_proof

ID = str(uuid.uuid4())
#: where _view_failed's dead letters (and _replayed's requests) say the event is on sg.events
ORIGINAL = {(1, 7)}


def _view_failed(**fields: Any) -> bytes:
    rec = {"stage": "route", "event_id": "e-1", "ingest_id": ID, "recipient": "northshire-csc",
           "events_partition": 1, "events_offset": 7,
           "reasons": [{"field": "$", "code": "view_failed", "message": "KeyringError"}], **fields}
    return json.dumps({k: v for k, v in rec.items() if v is not None}).encode()


def test_a_dead_letter_may_point_into_sg_events_or_sg_replay_and_nowhere_else() -> None:
    count, wanted = failed_shares([
        _view_failed(events_topic="sg.ingress.police"),  # a record there is shaped by a publisher
        _view_failed(events_topic="sg.deliver.oakfield-primary"),
        _view_failed(events_topic=["sg.events"]),
        _view_failed(events_topic="sg.replay", events_offset=9),
    ])
    assert count == 1 and wanted[ID].places == [("sg.replay", 1, 9)]


def test_a_dead_letter_written_before_sg_replay_existed_points_into_sg_events() -> None:
    _count, wanted = failed_shares([_view_failed(events_topic=None)])
    assert wanted[ID].places == [("sg.events", 1, 7)]


def test_every_place_an_event_is_said_to_be_is_kept_in_order_for_the_replay_to_try() -> None:
    """The original on sg.events may be past its retention while a replay of it is still on sg.replay."""
    count, wanted = failed_shares([_view_failed(), _view_failed(recipient="oakfield-primary"),
                                   _view_failed(events_topic="sg.replay", events_offset=0), _view_failed()])
    assert count == 4
    assert wanted[ID].places == [("sg.events", 1, 7), ("sg.replay", 1, 0)]
    assert wanted[ID].recipients == {"northshire-csc", "oakfield-primary"}


def test_malformed_dead_letters_and_other_stages_or_codes_are_ignored() -> None:
    count, wanted = failed_shares([
        b"not json", _view_failed(ingest_id="not-a-uuid"), _view_failed(events_offset="seven"),
        _view_failed(stage="ingest"), _view_failed(reasons=[{"code": "denied"}]), _view_failed(reasons=None),
    ])
    assert (count, wanted) == (0, {})


def _replayed(offset: int, *recipients: str) -> tuple[int, int, bytes]:
    return 0, offset, _request(ID, 1, 7, recipients)


def test_a_share_already_on_sg_replay_and_not_routed_yet_is_not_replayed_twice() -> None:
    from bus.replay import pending, replays_on_topic

    _count, wanted = failed_shares([_view_failed(), _view_failed(recipient="oakfield-primary")])
    assert pending(wanted[ID], ID, replays_on_topic([]), ORIGINAL, set()) == set()  # nothing replayed yet: replay both
    # `replay --failed` ran once (both shares on sg.replay at offset 0); run again before the route took them:
    replays = replays_on_topic([_replayed(0, "northshire-csc", "oakfield-primary")])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == {"northshire-csc", "oakfield-primary"}
    # The replay was routed and the MASH's view failed again: a dead letter names the replay's place.
    _count, wanted = failed_shares([_view_failed(), _view_failed(recipient="oakfield-primary"),
                                    _view_failed(events_topic="sg.replay", events_partition=0, events_offset=0)])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == {"oakfield-primary"}  # the MASH's may go again
    assert replays_on_topic([(0, 1, b"not json"), (0, 2, json.dumps({"ingest_id": "x", "replay_for": ["a"]}).encode())
                             ]) == {}
    # An event put there whole by an earlier sgbus (route now refuses it) holds no share back.
    whole = json.dumps({"ingest_id": ID, "replay_for": ["northshire-csc"], "event_type": "x", "payload": {}})
    assert replays_on_topic([(0, 3, whole.encode())]) == {}


def test_a_dead_letter_aged_out_or_written_twice_never_holds_a_share_back_or_lets_it_go_twice() -> None:
    from bus.replay import pending, replays_on_topic

    # The first dead letter (pointing into sg.events) is gone; the replay failed again and said so.
    replays = replays_on_topic([_replayed(5, "northshire-csc")])
    _count, wanted = failed_shares([_view_failed(events_topic="sg.replay", events_partition=0, events_offset=5)])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == set()
    # An at-least-once route wrote the first dead letter twice; the replay is not routed yet.
    _count, wanted = failed_shares([_view_failed(), _view_failed()])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == {"northshire-csc"}


def test_a_poisoned_dead_letter_is_skipped_not_raised() -> None:
    """Found in review: 1e999 (int() of infinity) and deep nesting raised out of the parse,
    and `sgbus replay --failed` crashed on a record any sg.dlq writer could leave."""
    poison = [b'{"stage":"route","reasons":[{"code":"view_failed"}],"ingest_id":"' + ID.encode()
              + b'","recipient":"x","events_partition":1e999,"events_offset":1}',
              b'{"stage":"route","reasons":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
              b'{"stage":"route","reasons":["view_failed"]}']
    count, wanted = failed_shares([*poison, _view_failed()])
    assert count == 1 and list(wanted) == [ID]


KEYRING = Keyring.generate()


def _stored_event() -> tuple[bytes, str]:
    """An event as ingest writes it to sg.events (no urgency, no replay_for)."""
    from schemas.registry import parse_event_dict
    from schemas.synthetic import Synth
    from tests.helpers import pseudonymised

    s = Synth(seed=7)
    event = pseudonymised(parse_event_dict(s.domestic_abuse_incident(s.child(5, 10), school_urn="900001")), KEYRING)
    return event.model_dump_json().encode(), str(event.ingest_id)


def _refusal(done: Any) -> str | None:
    """A refused request's dead-letter code (None if something is routed)."""
    return done.problem if done.event is None else None


def _request(ingest_id: str, partition: int = 2, offset: int = 17, recipients: tuple[str, ...] = ("northshire-csc",),
             proofs: dict[str, str] | None = None) -> bytes:
    """A request as `sgbus replay --failed` makes it, each recipient with its dead letter's proof."""
    given = proofs if proofs is not None else {r: replay_proof(KEYRING, ingest_id, r) for r in recipients}
    return ReplayRequest(ingest_id=uuid.UUID(ingest_id), events_partition=partition, events_offset=offset,
                         replay_for=list(recipients), proofs=given).model_dump_json().encode()


def test_a_replay_request_is_routed_as_the_event_sg_events_holds_for_the_recipients_named() -> None:
    stored, ingest_id = _stored_event()
    asked: list[tuple[int, int]] = []

    def fetch(partition: int, offset: int) -> bytes | None:
        asked.append((partition, offset))
        return stored

    done = resolve(_request(ingest_id), fetch, KEYRING)
    event, problem = done.event, done.problem
    assert problem == "" and asked == [(2, 17)] and done.unproven == []
    assert event is not None and str(event.ingest_id) == ingest_id and event.replay_for == ["northshire-csc"]
    assert event.model_copy(update={"replay_for": None}).model_dump_json().encode() == stored


def test_whoever_may_write_sg_replay_cannot_have_a_changed_or_made_up_event_shared() -> None:
    """Found in review: sg.replay carried whole events, routed as they stood; a holder of the
    replay principal's password could add an emergency override to a real event (or change its
    payload) and have it shared with every subscriber. Only requests are taken now, and the
    event is sg.events' own."""
    stored, ingest_id = _stored_event()
    forged = PseudonymisedEvent.model_validate_json(stored).model_copy(update={"replay_for": None})
    with_override = json.loads(forged.model_dump_json())
    with_override["urgency"] = {"declared_by_role": "designated-safeguarding-lead",
                                "justification": "x" * 40, "declaration": "forged"}
    # A whole event on sg.replay, however made, is not a request.
    assert _refusal(resolve(json.dumps(with_override).encode(), lambda p, o: stored, KEYRING)) == "replay_malformed"
    assert _refusal(resolve(stored, lambda p, o: stored, KEYRING)) == "replay_malformed"
    # A request naming another event's place, or a place no longer there, or one holding anything else.
    other = str(uuid.uuid4())
    assert _refusal(resolve(_request(other), lambda p, o: stored, KEYRING)) == "replay_mismatch"
    assert _refusal(resolve(_request(ingest_id), lambda p, o: None, KEYRING)) == "replay_missing"
    assert _refusal(resolve(_request(ingest_id), lambda p, o: b'{"not": "it"}', KEYRING)) == "replay_mismatch"
    # A request must name who missed it: never "everyone".
    empty = json.loads(_request(ingest_id)) | {"replay_for": []}
    assert _refusal(resolve(json.dumps(empty).encode(), lambda p, o: stored, KEYRING)) == "replay_malformed"
    extra = json.loads(_request(ingest_id)) | {"urgency": with_override["urgency"]}
    assert _refusal(resolve(json.dumps(extra).encode(), lambda p, o: stored, KEYRING)) == "replay_malformed"


def test_only_recipients_whose_view_failed_are_replayed_to() -> None:
    """From a second reader: replay_for could name any candidate, and the policy decides with
    today's agreements, so a partner that joined since could be sent an older event. A recipient
    goes only with the proof route put in its view_failed dead letter (a keyed hash the replay
    principal cannot make)."""
    stored, ingest_id = _stored_event()
    proof = replay_proof(KEYRING, ingest_id, "northshire-csc")
    both = _request(ingest_id, recipients=("northshire-csc", "new-partner"), proofs={"northshire-csc": proof})
    done = resolve(both, lambda p, o: stored, KEYRING)
    assert done.problem == "" and done.event is not None and done.event.replay_for == ["northshire-csc"]
    assert done.unproven == ["new-partner"]  # route dead-letters it, so the tool may ask again
    # A proof is for one share: not another recipient's, not another event's, not made up.
    for proofs in ({"new-partner": proof}, {"new-partner": "k0:" + "0" * 64},
                   {"new-partner": replay_proof(KEYRING, str(uuid.uuid4()), "new-partner")}, {}):
        forged = _request(ingest_id, recipients=("new-partner",), proofs=proofs)
        assert _refusal(resolve(forged, lambda p, o: stored, KEYRING)) == "replay_unproven"
    # A proof made under another keyring's key (the same key id) does not hold either.
    stranger = Keyring(type(KEYRING.token)(KEYRING.token.active, {KEYRING.token.active: b"x" * 32}), KEYRING.seal)
    assert not proven(KEYRING, ingest_id, "northshire-csc", replay_proof(stranger, ingest_id, "northshire-csc"))
    assert proven(KEYRING, ingest_id, "northshire-csc", proof)


def test_a_replay_that_failed_again_is_found_on_sg_events_through_its_request() -> None:
    from bus.replay import original_place

    on_replay = {(5, 8): _request(ID, 3, 99, ("northshire-csc",)), (5, 9): b'{"ingest_id": "not a request"}'}
    assert original_place(("sg.events", 1, 2), ID, on_replay) == (1, 2)
    assert original_place(("sg.replay", 5, 8), ID, on_replay) == (3, 99)
    assert original_place(("sg.replay", 5, 8), str(uuid.uuid4()), on_replay) is None  # another event's request
    assert original_place(("sg.replay", 5, 9), ID, on_replay) is None
    assert original_place(("sg.replay", 6, 0), ID, on_replay) is None  # gone


def test_a_request_naming_another_place_holds_no_share_back() -> None:
    """From a second reader: anyone who may write sg.replay could leave a request for a real
    share (its ingest id is in sg.dlq) naming an impossible place; route refuses it, and the
    share counted as on its way would never have been replayed."""
    from bus.replay import pending, replays_on_topic

    _count, wanted = failed_shares([_view_failed()])
    replays = replays_on_topic([(0, 3, _request(ID, 1, 2**40))])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == set()
    real = replays_on_topic([_replayed(4, "northshire-csc")])
    assert pending(wanted[ID], ID, real, ORIGINAL, set()) == {"northshire-csc"}


def test_a_request_kafka_could_not_even_ask_about_is_refused_not_raised() -> None:
    """From a second reader: a partition number past Kafka's int32 made the client raise, the
    route worker stop, and stop again at every start on the same record."""
    from bus.agents.replays import FetchUnavailable

    too_far = json.loads(_request(ID)) | {"events_partition": 2**31}
    assert _refusal(resolve(json.dumps(too_far).encode(), lambda p, o: b"", KEYRING)) == "replay_malformed"

    def broken(partition: int, offset: int) -> bytes | None:
        raise OverflowError("int too big")

    assert _refusal(resolve(_request(ID), broken, KEYRING)) == "replay_missing"

    def unavailable(partition: int, offset: int) -> bytes | None:
        raise FetchUnavailable("no answer from sg.events")

    with pytest.raises(FetchUnavailable):  # held and retried by the route agent, never refused for good
        resolve(_request(ID), unavailable, KEYRING)


def test_a_proof_that_is_not_one_is_refused_never_raised() -> None:
    """From a second reader: a non-ASCII proof made hmac.compare_digest raise, and the route
    worker stop on the same record at every start (key ids are public: they are in every token)."""
    stored, ingest_id = _stored_event()
    kid = KEYRING.token.active
    for bad in (f"{kid}:\u00e9", f"{kid}:" + "\u00e9" * 64, "x" * 5000):
        raw = json.loads(_request(ingest_id)) | {"proofs": {"northshire-csc": bad}}
        assert _refusal(resolve(json.dumps(raw).encode(), lambda p, o: stored, KEYRING)) == "replay_malformed"
        assert not proven(KEYRING, ingest_id, "northshire-csc", bad)


def test_a_request_route_refused_holds_no_share_back() -> None:
    """From a second reader: a refused request (no proof, the place gone, sg.events unreadable
    too long) was counted as still on its way for ever, and the share never asked for again."""
    from bus.replay import pending, refused_requests, replays_on_topic

    _count, wanted = failed_shares([_view_failed()])
    replays = replays_on_topic([_replayed(4, "northshire-csc")])
    assert pending(wanted[ID], ID, replays, ORIGINAL, set()) == {"northshire-csc"}
    refusals = refused_requests([
        json.dumps({"stage": "route", "reason": "replay_unavailable", "topic": "sg.replay", "partition": 0,
                    "offset": 4}).encode(),
        json.dumps({"stage": "route", "reason": "view_failed", "topic": "sg.replay", "partition": 0,
                    "offset": 5}).encode(),  # not a refusal
        b'{"stage": "route", "reason": "replay_missing", "topic": "sg.replay", "partition": 1e999, "offset": 1}'])
    assert refusals == {(0, 4): None}
    assert pending(wanted[ID], ID, replays, ORIGINAL, refusals) == set()


def test_a_request_routed_for_some_and_refused_for_others_holds_back_only_those_routed() -> None:
    """From a second reader: a request routed for its proven recipients and refused for the rest
    was taken as refused whole, and the routed shares asked for again (delivered twice while the
    audit stage caught up)."""
    from bus.replay import pending, refused_requests, replays_on_topic

    _count, wanted = failed_shares([_view_failed(), _view_failed(recipient="oakfield-primary")])
    replays = replays_on_topic([_replayed(4, "northshire-csc", "oakfield-primary")])
    partly = refused_requests([json.dumps({"stage": "route", "reason": "replay_unproven", "topic": "sg.replay",
                                           "partition": 0, "offset": 4, "recipients": ["oakfield-primary"]}).encode()])
    assert partly == {(0, 4): frozenset({"oakfield-primary"})}
    assert pending(wanted[ID], ID, replays, ORIGINAL, partly) == {"northshire-csc"}


def test_a_request_naming_huge_or_odd_recipients_is_refused_whole_and_its_refusal_stays_small() -> None:
    """From a second reader: recipients of any length and character were copied into the
    refusal's dead letter; a 1 MB request made a 3 MB one, the broker refused it, and the route
    worker stopped on the same record at every start."""
    stored, ingest_id = _stored_event()
    raw = json.loads(_request(ingest_id)) | {"replay_for": ["\U0001F600" * 1000] * 100, "proofs": {}}
    assert _refusal(resolve(json.dumps(raw).encode(), lambda p, o: stored, KEYRING)) == "replay_malformed"


def test_an_audit_record_without_a_proof_is_written_as_an_earlier_release_wrote_it() -> None:
    """From a second reader: every record carried "replay_proof": null, which an earlier audit
    stage refuses (a rolling upgrade would have lost audit batches)."""
    from datetime import UTC, datetime

    from bus.records import AuditRecord, encode_audit_batches

    fields = dict(audit_id=uuid.uuid4(), ingest_id=uuid.UUID(ID), event_id=uuid.uuid4(), event_type="t",
                  source_org="NSP", source_agency="police", recipient="a", decision="deny", agreement=None,
                  lawful_basis=[], purpose="p", fields_shared=[], identifier_modes={}, reasons=[],
                  policy_revision="r", subject_token="s", decided_at=datetime.now(UTC))
    plain = AuditRecord(**fields)  # type: ignore[arg-type]
    assert "replay_proof" not in plain.model_dump(mode="json")
    assert b"replay_proof" not in encode_audit_batches([plain])[0][1]
    failed = AuditRecord(**fields | {"decision": "view_failed", "replay_proof": "k1:" + "0" * 64})  # type: ignore[arg-type]
    assert failed.model_dump(mode="json")["replay_proof"] == "k1:" + "0" * 64


def test_the_audit_store_holds_each_failed_views_proof_and_none_for_an_earlier_releases(tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from bus.audit.chain import AuditStore
    from bus.audit.signer import load_signer, new_audit_signer
    from bus.records import AuditRecord

    new_audit_signer(tmp_path)
    store = AuditStore(tmp_path / "audit.db")
    proof = replay_proof(KEYRING, ID, "northshire-csc")

    def record(recipient: str, decision: str, proof: str | None) -> AuditRecord:
        return AuditRecord(audit_id=uuid.uuid4(), ingest_id=uuid.UUID(ID), event_id=uuid.uuid4(), event_type="t",
                           source_org="NSP", source_agency="police", recipient=recipient, decision=decision,
                           agreement=None, lawful_basis=[], purpose="p", fields_shared=[], identifier_modes={},
                           reasons=[], policy_revision="r", subject_token="s", decided_at=datetime.now(UTC),
                           replay_proof=proof)

    store.append([record("northshire-csc", "view_failed", proof), record("old-one", "view_failed", None),
                  record("oakfield-primary", "deny", None)], load_signer(tmp_path))
    assert store.view_failed([ID]) == {(ID, "northshire-csc"): proof, (ID, "old-one"): None}


def test_a_batch_is_held_while_sg_events_cannot_answer_then_its_requests_refused_within_one_hold() -> None:
    """From a second reader: the hold was per request, so a batch of N requests Kafka could not
    answer held routing N times as long. One deadline for the batch: fetches that come back in
    time are routed; after it, each remaining request is refused at once (`replay_unavailable`,
    asked for again by `sgbus replay --failed`)."""
    import asyncio

    from bus.agents.replays import FetchUnavailable, resolve_holding

    stored, ingest_id = _stored_event()
    calls: list[int] = []

    def flaky(partition: int, offset: int) -> bytes | None:  # two outages, then an answer
        calls.append(offset)
        if len(calls) <= 2:
            raise FetchUnavailable("no answer from sg.events")
        return stored

    def down(partition: int, offset: int) -> bytes | None:
        calls.append(offset)
        raise FetchUnavailable("no answer from sg.events")

    async def batch() -> tuple[list[str], list[int]]:
        hold_until = asyncio.get_running_loop().time() + 0.3
        problems, tries = [], []
        for fetch in (flaky, down, down, down):
            calls.clear()
            done = await resolve_holding(_request(ingest_id), fetch, KEYRING, hold_until, first_backoff_s=0.01)
            problems.append(done.problem)
            tries.append(len(calls))
        return problems, tries

    problems, tries = asyncio.run(batch())
    assert problems == ["", "replay_unavailable", "replay_unavailable", "replay_unavailable"]
    assert tries[0] == 3 and tries[1] > 1  # held and retried until the batch's deadline
    assert tries[2:] == [1, 1]  # after it: refused at once, not held again for each request
