import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.ingest import ingest
from bus.pseudonymise.keyring import Keyring
from schemas.synthetic import Synth

KEYRING = Keyring.generate()


def _ingest(raw: bytes):  # type: ignore[no-untyped-def]
    return ingest(raw, KEYRING, topic="sg.ingress.police", partition=0, offset=42)


def test_valid_event_is_pseudonymised() -> None:
    s = Synth(seed=5)
    out = _ingest(json.dumps(s.domestic_abuse_incident(s.child())).encode())
    assert out.event is not None and out.dead_letter is None


def test_invalid_event_becomes_a_dead_letter_naming_the_field_without_the_value() -> None:
    s = Synth(seed=5)
    e = s.domestic_abuse_incident(s.child())
    e["subject"]["identifiers"]["nhs_number"] = "9434765918"
    out = _ingest(json.dumps(e).encode())
    assert out.event is None and out.dead_letter is not None
    dl = out.dead_letter
    assert dl.reasons[0]["field"] == "subject.identifiers.nhs_number"
    assert dl.event_id == e["event_id"] and dl.offset == 42
    assert "9434765918" not in dl.model_dump_json()
    assert e["subject"]["given_name"] not in dl.model_dump_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_ingest(raw: bytes) -> None:
    out = _ingest(raw)
    assert (out.event is None) != (out.dead_letter is None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_envelopes_never_crash_ingest(data: st.DataObject) -> None:
    s = Synth(seed=9)
    e = s.domestic_abuse_incident(s.child())
    key = data.draw(st.sampled_from(sorted(e)))
    e[key] = data.draw(json_values)
    out = _ingest(json.dumps(e).encode())
    assert out.event is not None or (out.dead_letter is not None and out.dead_letter.reasons)
