"""Operators behind one interface; plans validated once; rotation keeps old tokens resolvable."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.exceptions import ConfigurationError, KeyringError
from bus.policy.data import Partner
from bus.policy.decision import Decision
from bus.pseudonymise.engine import recipient_view
from bus.pseudonymise.keyring import Keyring, load_keyring
from bus.pseudonymise.operators import REGISTRY, OperatorContext, get_operator, token, tokens_for_all_keys
from schemas.identifiers import nhs_number_check_digit, upn_check_letter
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised

KEYRING = Keyring.generate()


def test_registry_holds_every_operator_of_the_design() -> None:
    assert {"token", "seal", "reveal", "generalise", "drop", "keep"} <= set(REGISTRY)
    with pytest.raises(ConfigurationError, match="no operator named shred"):
        get_operator("shred")


def test_generalise_refuses_an_unknown_level_when_validated() -> None:
    with pytest.raises(ConfigurationError, match="unknown level"):
        get_operator("generalise").validate({"level": "decade"})
    with pytest.raises(ConfigurationError, match="takes no parameter"):
        get_operator("drop").validate({"level": "x"})


@pytest.mark.parametrize(("name", "kind", "params", "value", "expected"), [
    ("generalise", "dob", {"level": "year_month"}, "2015-06-30", "2015-06"),
    ("generalise", "postcode", {"level": "district"}, "NS10 2BB", "NS10"),
    ("generalise", "postcode", {"level": "year_month"}, "NS10 2BB", None),
    ("drop", "dob", {}, "2015-06-30", None),
    ("keep", "dob", {}, "2015-06-30", "2015-06-30"),
    ("reveal", "nhs_number", {}, "9434765919", "9434765919"),
])
def test_operator_results(name: str, kind: str, params: dict[str, str], value: str, expected: str | None) -> None:
    assert get_operator(name).operate(value, OperatorContext(KEYRING, kind=kind), params) == expected


def test_rotation_keeps_old_tokens_resolvable() -> None:
    old = token(KEYRING, "mash", "nhs_number", "9434765919")
    rotated = KEYRING.rotated()
    new = token(rotated, "mash", "nhs_number", "9434765919")
    assert old != new
    assert {old, new} == tokens_for_all_keys(rotated, "mash", "nhs_number", "9434765919")


def test_keyring_errors_never_show_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    data = KEYRING.to_json()
    data["seal"]["active"] = "missing"
    path.write_text(json.dumps(data))
    with pytest.raises(KeyringError) as info:
        load_keyring(path)
    for material in data["seal"]["keys"].values():
        assert material not in str(info.value)


def _csc_decision(**kw: object) -> Decision:
    base: dict[str, object] = {"event_id": "e", "recipient": "northshire-csc", "allow": True, "agreement": "A",
                               "purpose": "p", "reasons": ["r"], "revision": "v",
                               "fields": ["police_reference", "incident_at", "school_urn", "risk_grade"],
                               "free_text": {"circumstances": "redact", "child_voice": "redact"},
                               "identifiers": {"nhs_number": "token", "upn": "token"}}
    base.update(kw)
    return Decision.model_validate(base)


PARTNER = Partner(id="northshire-csc", name="c", agency="social_care", org_id="N01", area="n", linkage_domain="mash")


def test_free_text_in_sg_events_is_redacted_of_the_subjects_name_and_identifiers() -> None:
    s = Synth(seed=12)
    child = s.child(min_age=5)
    e = s.domestic_abuse_incident(child)
    nhs = child["identifiers"]["nhs_number"]
    e["payload"]["circumstances"] = f"{child['given_name']} {child['family_name']} (NHS {nhs}) rang 07700 900123."
    pev = pseudonymised(parse_event_dict(e), KEYRING)
    assert pev.payload["circumstances"] == "[PERSON] (NHS [NHS_NUMBER]) rang [PHONE]."


def test_urgency_justification_is_redacted_too() -> None:
    s = Synth(seed=13)
    child = s.child(min_age=5)
    e = s.domestic_abuse_incident(child)
    e["urgency"] = {"urgent_risk_of_significant_harm": True, "declared_by_role": "duty inspector",
                    "justification": f"Threat to take {child['given_name']} abroad tonight; call 07700 900123."}
    pev = pseudonymised(parse_event_dict(e), KEYRING, override_role="duty inspector")
    assert pev.urgency is not None
    assert pev.urgency.justification == "Threat to take [PERSON] abroad tonight; call [PHONE]."


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=9, max_size=9), st.lists(st.integers(0, 9), min_size=9, max_size=9),
       st.sampled_from(["Ava", "Noah", "Isla"]), st.sampled_from(["Testwood", "Mockford"]))
def test_planted_identifiers_never_appear_in_sg_events_or_token_views(
    nhs_digits: list[int], upn_digits: list[int], given: str, family: str,
) -> None:
    nine = "999" + "".join(map(str, nhs_digits[:6]))
    check = nhs_number_check_digit(nine)
    if check is None:
        return
    nhs = nine + str(check)
    body = "999" + "".join(map(str, upn_digits))
    upn = upn_check_letter(body) + body
    s = Synth(seed=14)
    child = s.child(min_age=5)
    child.update(given_name=given, family_name=family)
    child["identifiers"] = {"nhs_number": nhs, "upn": upn}
    e = s.domestic_abuse_incident(child)
    e["payload"]["circumstances"] = f"{given} {family}, NHS {nhs[:3]} {nhs[3:6]} {nhs[6:]}, UPN {upn}."
    e["payload"]["child_voice"] = f"I am {given}."
    pev = pseudonymised(parse_event_dict(e), KEYRING)
    view = recipient_view(pev, _csc_decision(), PARTNER, KEYRING)
    events_text = pev.model_dump_json()
    view_text = view.model_dump_json(exclude={"subject": {"given_name", "family_name"}})
    for raw in (nhs, upn, f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", family):
        assert raw not in events_text
        assert raw not in view_text


def test_keyring_from_environment_wins_and_settings_never_print_it(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from bus.pseudonymise.keyring import keyring_from_settings
    from bus.settings import Settings

    secret = json.dumps(KEYRING.to_json())
    loaded = keyring_from_settings(tmp_path / "absent.json", secret)
    assert loaded.token.active == KEYRING.token.active
    settings = Settings(keyring_json=SecretStr(secret))
    material = KEYRING.to_json()["token"]["keys"][KEYRING.token.active]
    assert material not in repr(settings) and material not in str(settings.model_dump())
    with pytest.raises(KeyringError, match="not valid JSON"):
        keyring_from_settings(tmp_path / "absent.json", "{nope")


def test_webhook_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    import random

    from connectors.delivery.webhook import backoff_delays

    delays = backoff_delays(base_s=0.2, cap_s=3.0, rng=random.Random(1))
    got = [next(delays) for _ in range(12)]
    assert all(0 <= d <= min(3.0, 0.2 * 2**i) for i, d in enumerate(got))
    assert max(got[6:]) > 0.2 * 2  # later attempts wait longer than the first ones can


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), kind=st.sampled_from(["nhs_number", "upn", "la_child_id"]),
       value=st.text(min_size=1, max_size=40))
def test_tokens_are_the_hmac_and_base32_of_the_design_byte_for_byte(key: bytes, kind: str, value: str) -> None:
    """token() keys its HMAC once per domain key and encodes base32 itself (for speed): the
    result must stay exactly hmac.new + base64.b32encode, or every pseudonym would change."""
    import base64
    import hashlib
    import hmac

    from bus.pseudonymise.keyring import KeySet
    from bus.pseudonymise.operators.token import b32_digest, canonical_identifier

    keyring = Keyring(KeySet("k1", {"k1": key}), KeySet("s1", {"s1": bytes(32)}))
    _, domain_key = keyring.domain_key("police")
    mac = hmac.new(domain_key, canonical_identifier(kind, value), hashlib.sha256).digest()
    expected = f"psn:k1:{base64.b32encode(mac).decode().rstrip('=').lower()}"
    assert token(keyring, "police", kind, value) == expected
    assert b32_digest(mac) == base64.b32encode(mac).decode().rstrip("=").lower()
    # a second key in the same process gets its own keyed HMAC, not the first one's
    other = Keyring(KeySet("k1", {"k1": bytes(b ^ 0xFF for b in key)}), keyring.seal)
    assert token(other, "police", kind, value) != expected
