"""Ingest: valid, signed events are pseudonymised; everything else is a dead letter naming the
field and a reason code, never a crash, never the value."""

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.ingest import Record, ingest, ingest_id_for
from bus.provenance.registry import LocalSigners
from bus.provenance.verify import verify_delivered
from bus.pseudonymise.engine import recipient_view, reveal_subject
from bus.pseudonymise.keyring import Keyring
from schemas.envelope import Agency
from schemas.synthetic import Synth

KEYRING = Keyring.generate()


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> LocalSigners:
    local = LocalSigners(tmp_path_factory.mktemp("signers"))
    for agency, org in ((Agency.POLICE, "NSP"), (Agency.POLICE, "XSP"), (Agency.SCHOOL, "900001")):
        local.issue_publisher(agency, org)
    local.issue_declarer("duty inspector", "northshire-police")
    local.issue_declarer("school business manager", "oakfield-primary")
    return local


def _ingest(raw: bytes | dict[str, Any], signers: LocalSigners, topic: str = "sg.ingress.police"):  # type: ignore[no-untyped-def]
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    return ingest(raw, KEYRING, signers.registry(), topic=topic, partition=0, offset=42, timestamp_ms=1)


def _dai() -> dict[str, Any]:
    s = Synth(seed=5)
    return s.domestic_abuse_incident(s.child())


def _code(out: Any) -> str:
    assert out.event is None and out.dead_letter is not None
    return str(out.dead_letter.reasons[0]["code"])


def test_valid_signed_event_is_pseudonymised_with_its_provenance(signers: LocalSigners) -> None:
    signed = signers.sign(_dai())
    out = _ingest(signed, signers)
    assert out.event is not None and out.dead_letter is None
    assert out.event.provenance.signature == signed["signature"]
    assert out.event.ingest_id == ingest_id_for("sg.ingress.police", 0, 42, 1)


def test_an_unsigned_event_is_dead_lettered(signers: LocalSigners) -> None:
    """Regression (issue 13): the envelope's signature was accepted and ignored."""
    assert _code(_ingest(_dai(), signers)) == "unsigned"


def test_an_altered_signed_event_is_dead_lettered(signers: LocalSigners) -> None:
    signed = signers.sign(_dai())
    signed["payload"]["child_present"] = not signed["payload"]["child_present"]
    assert _code(_ingest(signed, signers)) == "bad_signature"


def test_an_event_signed_by_another_organisations_key_is_dead_lettered(signers: LocalSigners) -> None:
    event = _dai()
    event["source"]["org_id"] = "XSP"
    forged = signers.sign(event)  # signed by XSP's key ...
    forged["source"]["org_id"] = "NSP"  # ... then claims to be NSP
    out = _ingest(forged, signers)
    assert _code(out) == "signer_not_source" and out.dead_letter.reasons[0]["field"] == "source.org_id"


def test_a_police_event_on_the_school_topic_is_dead_lettered(signers: LocalSigners) -> None:
    """Regression (issue 13): a police domestic-abuse event read from sg.ingress.school was accepted."""
    assert _code(_ingest(signers.sign(_dai()), signers, topic="sg.ingress.school")) == "source_topic_mismatch"


def test_a_signed_event_without_its_nonce_is_dead_lettered(signers: LocalSigners) -> None:
    """The nonce keeps the content digest recipients see from confirming guesses."""
    signed = signers.sign(_dai())
    assert len(signed["nonce"]) >= 22  # 128 bits, base64url
    assert _code(_ingest({k: v for k, v in signed.items() if k != "nonce"}, signers)) == "missing_nonce"


def test_a_nonce_under_128_bits_is_refused_naming_the_field() -> None:
    from schemas.registry import InvalidEvent, parse_event_dict

    short = {**_dai(), "nonce": "A" * 21}  # 126 bits: what the README promises is at least 128
    with pytest.raises(InvalidEvent) as info:
        parse_event_dict(short)
    assert [p.field for p in info.value.problems] == ["nonce"]


def test_the_signing_key_register_refuses_bad_keys_and_shared_key_ids(signers: LocalSigners) -> None:
    from pydantic import ValidationError

    from bus.provenance.registry import SignerRegistry

    reg = signers.registry().model_dump(mode="json")
    with pytest.raises(ValidationError, match="Ed25519"):
        SignerRegistry.model_validate({**reg, "publishers": [{**reg["publishers"][0], "public_key": "AAAA"}]})
    clash = {**reg["declarers"][0], "kid": reg["publishers"][0]["kid"]}
    with pytest.raises(ValidationError, match="unique"):
        SignerRegistry.model_validate({**reg, "declarers": [clash]})


def test_an_unknown_or_malformed_signature_is_dead_lettered(signers: LocalSigners) -> None:
    signed = signers.sign(_dai())
    other = LocalSigners(signers.private_dir.parent / "other")
    other.issue_publisher(Agency.POLICE, "NSP")
    assert _code(_ingest(other.sign(_dai()), signers)) == "unknown_signing_key"
    assert _code(_ingest({**signed, "signature": "not-a-jws"}, signers)) == "malformed_signature"


def test_a_recipient_can_verify_the_publishers_signature_on_its_view(signers: LocalSigners) -> None:
    from bus.policy.data import Partner
    from bus.policy.decision import Decision

    out = _ingest(signers.sign(_dai()), signers)
    assert out.event is not None
    decision = Decision(event_id=str(out.event.event_id), recipient="csc", allow=True, agreement="A-1",
                        purpose="p", reasons=["A-1 allows"], revision="r", fields=["incident_at"], identifiers={})
    partner = Partner(id="csc", name="csc", agency="social_care", org_id="N01", area="n", linkage_domain="mash")
    view = json.loads(recipient_view(out.event, decision, partner, KEYRING,
                                     reveal_subject(out.event, KEYRING)).model_dump_json())
    key = signers.registry().public_key(view["provenance"]["kid"])
    assert verify_delivered(view, key)
    assert not verify_delivered({**view, "event_type": "police.missing_episode.v1"}, key)


def _urgent(signers: LocalSigners, role: str = "duty inspector", sign_as: str | None = None,
            justification: str = "Immediate risk: threats to remove the child tonight.") -> dict[str, Any]:
    event = _dai()
    event["urgency"] = {"urgent_risk_of_significant_harm": True, "declared_by_role": role,
                        "justification": justification}
    declared = signers.declare(event, sign_as or role)
    declared["urgency"]["declared_by_role"] = role  # what the event claims, whoever signed
    return declared


def test_an_override_declared_by_a_registered_role_is_kept(signers: LocalSigners) -> None:
    out = _ingest(signers.sign(_urgent(signers)), signers)
    assert out.event is not None and out.event.urgency is not None
    assert out.event.urgency.declared_by_role == "duty inspector" and out.override_refused is None


def test_a_justification_that_redacts_shorter_than_the_publishers_minimum_is_kept_and_reads_back(
        signers: LocalSigners) -> None:
    """Found in review (session 24): the redacted copy of a valid justification (20 characters or
    more) can be shorter than 20 (a long name becomes [PERSON]); sg.events held it, and every reader
    that validated it again (the route stage, replays, the worker's hand-back from ingest's
    process) refused the event. The copy on sg.events has bounds of its own."""
    from bus.ingest_process import _as_json, _from_json
    from bus.records import PseudonymisedEvent

    text = "Seen with Bartholomew Featherstonehaugh"
    out = _ingest(signers.sign(_urgent(signers, justification=text)), signers)
    assert out.event is not None and out.event.urgency is not None and out.override_refused is None
    assert len(text) >= 20 > len(out.event.urgency.justification)  # the case itself: redacted short
    assert "Featherstonehaugh" not in out.event.model_dump_json()
    read_back = PseudonymisedEvent.model_validate_json(out.event.model_dump_json())
    assert read_back == out.event
    record = Record(b"{}", "sg.ingress.police", 0, 42, 1)
    handed = _from_json(_as_json(out), record)
    assert handed is not None and handed.event == out.event


def test_an_event_the_worker_cannot_read_back_is_dead_lettered_not_raised() -> None:
    """Ingest's process validates what it builds, so this is a bug's path: it must cost the one
    event (a dead letter naming no value), not stop the worker on the same batch at every start."""
    from bus.ingest import IngestOutcome
    from bus.ingest_process import _from_json

    record = Record(b'{"event_id": "not-a-uuid"}', "sg.ingress.police", 1, 7, 1)
    out = _from_json(IngestOutcome(event_json=b'{"ingest_id": "x"}'), record)
    assert out is not None and out.event is None and out.dead_letter is not None
    assert out.dead_letter.reasons[0]["code"] == "internal_error"
    assert (out.dead_letter.topic, out.dead_letter.partition, out.dead_letter.offset) == ("sg.ingress.police", 1, 7)


def test_a_self_asserted_override_is_routed_without_it(signers: LocalSigners) -> None:
    """Regression (issue 13): any event carrying `urgency` got every field and identifier."""
    event = _dai()
    event["urgency"] = {"urgent_risk_of_significant_harm": True, "declared_by_role": "duty inspector",
                        "justification": "Immediate risk: threats to remove the child tonight."}
    out = _ingest(signers.sign(event), signers)
    assert out.event is not None and out.event.urgency is None and out.override_refused == "override_undeclared"
    # a declaration by another role's key, relabelled, does not pass either
    relabelled = _urgent(signers, role="duty inspector", sign_as="school business manager")
    out = _ingest(signers.sign(relabelled), signers)
    assert out.event is not None and out.event.urgency is None and out.override_refused == "override_role_mismatch"
    # nor does a declaration copied onto another event, or onto the same id about another child
    donor = _urgent(signers)
    target = {**_dai(), "event_id": "5b0f5a52-3c7e-4d8e-9a41-6f1f0d7f2b10", "nonce": donor["nonce"]}
    target["urgency"] = donor["urgency"]
    out = _ingest(signers.sign(target), signers)
    assert out.event is not None and out.event.urgency is None and out.override_refused == "override_bad_declaration"
    other_child = {**donor, "subject": Synth(seed=6).child()}
    out = _ingest(signers.sign(other_child), signers)
    assert out.event is not None and out.event.urgency is None and out.override_refused == "override_bad_declaration"
    # a registered role's own declaration passes ingest with that role; whether the role may
    # invoke the override is the policy's decision (emergency.declarer_roles, Rego tests)
    other = _ingest(signers.sign(_urgent(signers, role="school business manager")), signers)
    assert other.event is not None and other.event.urgency is not None
    assert other.event.urgency.declared_by_role == "school business manager"


def test_invalid_event_becomes_a_dead_letter_naming_the_field_without_the_value(signers: LocalSigners) -> None:
    e = _dai()
    e["subject"]["identifiers"]["nhs_number"] = "9434765918"
    out = _ingest(signers.sign(e), signers)
    assert out.event is None and out.dead_letter is not None
    dl = out.dead_letter
    assert dl.reasons[0]["field"] == "subject.identifiers.nhs_number"
    assert dl.event_id == e["event_id"] and dl.offset == 42
    assert "9434765918" not in dl.model_dump_json()
    assert e["subject"]["given_name"] not in dl.model_dump_json()


def test_a_dead_letter_repeats_an_event_type_only_from_the_catalogue(signers: LocalSigners) -> None:
    made_up = {**_dai(), "event_type": "smith.jane_born_in_may.v1"}  # the right shape, spelling a child
    out = _ingest(signers.sign(made_up), signers)
    assert out.dead_letter is not None and out.dead_letter.event_type is None
    assert "smith" not in out.dead_letter.model_dump_json()
    bad = _dai()
    bad["subject"]["identifiers"]["nhs_number"] = "9434765918"
    known = _ingest(signers.sign(bad), signers)
    assert known.dead_letter is not None and known.dead_letter.event_type == bad["event_type"]


def test_ingest_ids_differ_per_record_and_repeat_per_replay() -> None:
    assert ingest_id_for("t", 0, 1, 5) == ingest_id_for("t", 0, 1, 5)
    assert len({ingest_id_for("t", 0, 1, 5), ingest_id_for("t", 1, 1, 5), ingest_id_for("t", 0, 2, 5),
                ingest_id_for("t", 0, 1, 6), ingest_id_for("u", 0, 1, 5)}) == 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_ingest(signers: LocalSigners, raw: bytes) -> None:
    out = _ingest(raw, signers)
    assert (out.event is None) != (out.dead_letter is None)


def test_deeply_nested_json_is_a_dead_letter_not_a_crash(signers: LocalSigners) -> None:
    """Found in review: json.loads raised RecursionError outside the handled errors."""
    for raw in (b"[" * 5000, b'{"a":' * 5000):
        out = _ingest(raw, signers)
        assert out.event is None and out.dead_letter is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_signed_envelopes_never_crash_ingest(signers: LocalSigners, data: st.DataObject) -> None:
    s = Synth(seed=9)
    e = s.domestic_abuse_incident(s.child())
    key = data.draw(st.sampled_from(sorted(e)))
    e[key] = data.draw(json_values)
    try:
        signed = signers.sign(e)
    except Exception:  # a mutated source has no key: the unsigned event must still not crash ingest
        signed = e
    out = _ingest(signed, signers)
    assert out.event is not None or (out.dead_letter is not None and out.dead_letter.reasons)


def _checked(signers: LocalSigners, events: list[dict[str, Any]]) -> list[Any]:
    from bus.ingest import Checked, Record, check

    out = [check(Record(json.dumps(signers.sign(e)).encode(), "sg.ingress.police", 0, i, 1), signers.registry())
           for i, e in enumerate(events)]
    assert all(isinstance(c, Checked) for c in out)
    return out


def test_without_a_redactor_a_batch_is_held_not_dead_lettered(signers: LocalSigners,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: if the redactor cannot be built nothing is shared and nothing is lost."""
    from bus.ingest import pseudonymise_checked
    from bus.redaction import redactor

    def broken() -> Any:
        raise redactor.RedactorUnavailable("the redactor cannot be built (ModelError)")

    monkeypatch.setattr(redactor, "default_redactor", broken)
    monkeypatch.setattr("bus.redaction.default_redactor", broken)
    with pytest.raises(redactor.RedactorUnavailable):
        pseudonymise_checked(_checked(signers, [_dai(), _dai()]), KEYRING)


def test_a_text_that_cannot_be_analysed_dead_letters_its_own_event_only(signers: LocalSigners,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.ingest import pseudonymise_checked
    from bus.redaction import default_redactor
    from bus.redaction.redactor import RedactionFailed

    s = Synth(seed=6)
    poison = s.domestic_abuse_incident(s.child())
    poison["payload"]["circumstances"] = "a text the analyzer cannot finish"
    real = default_redactor().redact_many

    def redact_many(items: Any) -> list[str]:
        if any(text == poison["payload"]["circumstances"] for text, *_ in items):
            raise RedactionFailed("a redaction pattern timed out; the text is not passed on")
        return real(items)

    monkeypatch.setattr(default_redactor(), "redact_many", redact_many)
    outcomes = pseudonymise_checked(_checked(signers, [_dai(), poison]), KEYRING)
    assert outcomes[0].event is not None
    assert _code(outcomes[1]) == "redaction_failed"
    assert "cannot finish" not in json.dumps(outcomes[1].dead_letter.model_dump(mode="json"))


def test_a_key_issued_since_the_register_was_read_is_left_for_a_fresh_register_unless_final(
        tmp_path: Path) -> None:
    from bus.ingest import prepare_batch

    local = LocalSigners(tmp_path)
    local.issue_publisher(Agency.POLICE, "NSP")
    before = local.registry()
    local.issue_publisher(Agency.POLICE, "XSP")  # issued after `before` was read
    known, new = _dai(), _dai()
    new["event_id"] = str(uuid.uuid4())
    new["source"]["org_id"] = "XSP"
    records = [Record(json.dumps(local.sign(e)).encode(), "sg.ingress.police", 0, i, 1)
               for i, e in enumerate((known, new))]
    first = prepare_batch(records, before, KEYRING, final=False)
    assert first[0] is not None and first[0].event is not None and first[1] is None
    assert _code(prepare_batch(records[1:], before, KEYRING, final=True)[0]) == "unknown_signing_key"
    again = prepare_batch(records[1:], local.registry(), KEYRING, final=True)[0]
    assert again is not None and again.event is not None and str(again.event.event_id) == new["event_id"]


def test_the_redact_plan_is_redact_fields_as_data_and_crosses_to_another_process() -> None:
    import pickle

    from bus.policy.data import load_partnership
    from schemas.registry import EVENT_MODELS

    partnership = load_partnership(Path(__file__).parents[2] / "policies" / "data")
    plan = pickle.loads(pickle.dumps(partnership.redact_plan))  # noqa: S301 - our own bytes, as the pool sends them
    types = [*EVENT_MODELS, "police.not_a_type.v1"]
    assert [plan(t) for t in types] == [partnership.redact_fields(t) for t in types]
    assert any(plan(t) for t in types)  # the sample partnership redacts something
    assert partnership.emergency is not None
    data = partnership.model_dump()
    data["emergency"]["free_text"] = "redact"
    redacting = type(partnership).model_validate(data)
    assert redacting.redact_plan(types[0]) is None  # an emergency that redacts: every field


def test_an_event_handed_back_from_ingests_process_as_json_is_the_same_event(signers: LocalSigners) -> None:
    """Ingest's process sends each event back as the JSON the worker writes to sg.events
    (bus/ingest_process.py): validated again there, it is the event ingest made, and its bytes
    are what the model itself would have written; dead letters go back as they were."""
    from bus.ingest_process import _as_json, _from_json

    urgent = _ingest(signers.sign(_urgent(signers)), signers)
    for out in (_ingest(signers.sign(_dai()), signers), urgent):
        assert out.event is not None
        sent = _as_json(out)
        assert sent is not None and sent.event is None and sent.event_json is not None
        back = _from_json(sent, Record(b"{}", "sg.ingress.police", 0, 42, 1))
        assert back is not None and back.event == out.event
        assert back.event_json == out.event.model_dump_json().encode()
        assert back.override_refused == out.override_refused
    dead = _ingest(_dai(), signers)
    assert _as_json(dead) is dead and _from_json(dead, Record(b"{}", "sg.ingress.police", 0, 42, 1)) is dead
    assert _as_json(None) is None


def test_an_event_with_thousands_of_problems_gets_a_small_dead_letter_that_says_how_many_more(
        signers: LocalSigners) -> None:
    """Found in review: 26,562 made-up payload keys in a 235 KB event made a 2.6 MB dead letter,
    over Kafka's message limit; its failed send stopped ingest for every publisher."""
    event = _dai()
    event["payload"].update({f"k{i}": 1 for i in range(20_000)})
    event["event_id"] = "not-a-uuid-S"
    raw = json.dumps(event, separators=(",", ":")).encode()
    assert len(raw) < 256 * 1024
    out = _ingest(raw, signers)
    assert out.dead_letter is not None
    letter = out.dead_letter.model_dump_json()
    assert len(letter) < 8_000
    reasons = out.dead_letter.reasons
    assert len(reasons) <= 21
    # One unknown-field problem, not 26,000 of them; the bad id's own characters not quoted.
    assert [r["field"] for r in reasons].count("payload.<unknown>") == 1
    bad_id = next(r for r in reasons if r["field"] == "event_id")
    assert bad_id["message"] == "Input should be a valid UUID" and "S" not in bad_id["message"].split()[-1]


def test_a_dead_letter_with_very_long_field_paths_stays_small(signers: LocalSigners) -> None:
    from bus.ingest import rejected

    reasons = [{"field": "payload." + "x." * 5_000 + str(i), "code": "c" * 500, "message": "m" * 5_000}
               for i in range(100)]
    out = rejected(b"{}", reasons, topic="sg.ingress.police", partition=0, offset=1)
    assert out.dead_letter is not None and len(out.dead_letter.model_dump_json()) < 16_000


def test_more_distinct_problems_than_listed_are_counted_in_a_last_reason() -> None:
    from schemas.registry import MAX_PROBLEMS, Problem, capped

    listed = capped([Problem(field=f"payload.f{i}", code="missing", message="Field required") for i in range(50)])
    assert len(listed) == MAX_PROBLEMS + 1
    assert listed[-1].code == "more_problems" and listed[-1].message.startswith("30 more")


def test_the_redacted_copy_on_sg_events_holds_none_of_the_childs_identifiers_however_written(
        signers: LocalSigners) -> None:
    """Found in review: ingest gave the redactor the child's names only, so the child's NHS
    number written without a space before it, or the date of birth after no trigger word, stayed
    in the redacted copy (what an agreement asking `redact` delivers, whatever it says of them)."""
    event = _dai()
    nhs = event["subject"]["identifiers"]["nhs_number"]
    year, month, day = event["subject"]["date_of_birth"].split("-")
    event["payload"]["circumstances"] = f"Child NHS{nhs} seen; born {day}/{month}/{year}, on the landing."
    out = _ingest(signers.sign(event), signers)
    assert out.event is not None
    copy = str(out.event.payload["circumstances"])
    assert nhs not in copy and f"{day}/{month}/{year}" not in copy
    assert "[NHS_NUMBER]" in copy and "[DATE_OF_BIRTH]" in copy


def test_a_dead_letter_capped_twice_keeps_the_count_of_what_it_left_out() -> None:
    """Found in a second reading: ingest capped the parser's capped list again and counted its
    "16 more" line as one problem."""
    from schemas.registry import Problem, capped

    once = capped([Problem(field=f"payload.f{i}", code="missing", message="Field required") for i in range(36)])
    twice = capped(once)
    assert twice[-1].code == "more_problems" and twice[-1].message.startswith("16 more")
    assert twice == once
