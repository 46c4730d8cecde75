import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.exceptions import KeyringError
from bus.policy.data import Partner
from bus.policy.decision import Decision, Demographics
from bus.pseudonymise import operators
from bus.pseudonymise.engine import recipient_view
from bus.pseudonymise.keyring import CONTROLLER_DOMAIN, Keyring, init_keyring, load_keyring
from schemas.identifiers import nhs_number_check_digit
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


def _partner(pid: str, domain: str) -> Partner:
    return Partner(id=pid, name=pid, agency="social_care", org_id="N01", area="x", linkage_domain=domain)


def _decision(**kw: object) -> Decision:
    base: dict[str, object] = {
        "event_id": "e", "recipient": "r", "allow": True, "agreement": "DSA-X", "purpose": "p",
        "reasons": ["ok"], "revision": "rev", "lawful_basis": ["s.11"], "retention_days": 30,
    }
    base.update(kw)
    return Decision.model_validate(base)


def _event() -> dict[str, object]:
    s = Synth(seed=11)
    return s.domestic_abuse_incident(s.child())


def test_tokens_are_deterministic_per_domain_and_differ_across_domains(keyring: Keyring) -> None:
    a = operators.token(keyring, "mash", "nhs_number", "9434765919")
    assert a == operators.token(keyring, "mash", "nhs_number", "9434765919")
    assert a != operators.token(keyring, "education", "nhs_number", "9434765919")
    assert a != operators.token(keyring, "mash", "upn", "9434765919")
    assert a.startswith(f"psn:{keyring.token.active}:")


def test_seal_is_bound_to_its_event(keyring: Keyring) -> None:
    sealed = operators.seal(keyring, {"x": 1}, "event-1/subject")
    assert operators.reveal(keyring, sealed, "event-1/subject") == {"x": 1}
    with pytest.raises(KeyringError):
        operators.reveal(keyring, sealed, "event-2/subject")


def test_rotation_keeps_old_seals_openable_and_old_tokens_resolvable(keyring: Keyring) -> None:
    old_token = operators.token(keyring, "mash", "nhs_number", "9434765919")
    sealed = operators.seal(keyring, {"x": 1}, "ad")
    rotated = keyring.rotated()
    assert operators.reveal(rotated, sealed, "ad") == {"x": 1}
    old_kid = old_token.split(":")[1]
    kid, key = rotated.domain_key("mash", old_kid)
    assert kid == old_kid and key == keyring.domain_key("mash")[1]


def test_ingest_output_holds_no_raw_identifier_or_name(keyring: Keyring) -> None:
    raw = _event()
    pev = pseudonymised(parse_event_dict(raw), keyring)
    text = pev.model_dump_json()
    subject = raw["subject"]
    assert isinstance(subject, dict)
    for value in [*subject["identifiers"].values(), subject["given_name"], subject["family_name"]]:
        assert value not in text
    assert pev.subject.tokens["nhs_number"] == operators.token(
        keyring, CONTROLLER_DOMAIN, "nhs_number", subject["identifiers"]["nhs_number"]
    )


def test_recipient_view_applies_identifier_modes_fields_and_generalisation(keyring: Keyring) -> None:
    raw = _event()
    pev = pseudonymised(parse_event_dict(raw), keyring)
    decision = _decision(
        fields=["risk_grade"], identifiers={"nhs_number": "token", "upn": "reveal"},
        demographics=Demographics(dob="year_month", postcode="district", name="drop"),
    )
    view = recipient_view(pev, decision, _partner("csc", "mash"), keyring)
    subject = raw["subject"]
    assert isinstance(subject, dict)
    assert view.subject.identifiers["upn"] == subject["identifiers"]["upn"]
    assert view.subject.identifiers["nhs_number"] == operators.token(
        keyring, "mash", "nhs_number", subject["identifiers"]["nhs_number"])
    assert view.subject.date_of_birth == subject["date_of_birth"][:7]
    assert view.subject.postcode == subject["postcode"].split()[0]
    assert view.subject.given_name is None and view.subject.family_name is None
    assert set(view.payload) == {"risk_grade"}
    assert subject["identifiers"]["nhs_number"] not in view.model_dump_json()


def test_partners_in_one_linkage_domain_get_equal_tokens(keyring: Keyring) -> None:
    pev = pseudonymised(parse_event_dict(_event()), keyring)
    d = _decision(identifiers={"nhs_number": "token"})
    a = recipient_view(pev, d, _partner("csc", "mash"), keyring).subject.identifiers["nhs_number"]
    b = recipient_view(pev, d, _partner("police", "mash"), keyring).subject.identifiers["nhs_number"]
    c = recipient_view(pev, d, _partner("school", "education"), keyring).subject.identifiers["nhs_number"]
    assert a == b != c


def test_no_view_is_built_for_a_denied_decision(keyring: Keyring) -> None:
    pev = pseudonymised(parse_event_dict(_event()), keyring)
    with pytest.raises(ValueError, match="allowed"):
        recipient_view(pev, _decision(allow=False, agreement=None), _partner("csc", "mash"), keyring)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=9, max_size=9))
def test_planted_nhs_numbers_never_appear_in_token_mode_output(digits: list[int]) -> None:
    nine = "".join(map(str, digits))
    check = nhs_number_check_digit(nine)
    if check is None:
        return
    nhs = nine + str(check)
    keyring = Keyring.generate()
    raw = _event()
    raw["subject"]["identifiers"]["nhs_number"] = nhs  # type: ignore[index]
    pev = pseudonymised(parse_event_dict(raw), keyring)
    view = recipient_view(pev, _decision(identifiers={"nhs_number": "token"}, fields=["risk_grade"]),
                          _partner("csc", "mash"), keyring)
    assert nhs not in pev.model_dump_json()
    assert nhs not in view.model_dump_json()


def test_keyring_file_is_private_and_repr_hides_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    keyring, created = init_keyring(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    material = json.loads(path.read_text())["token"]["keys"][keyring.token.active]
    assert material not in repr(keyring) and material not in str(keyring)
    assert load_keyring(path).token.active == keyring.token.active
    again, created_again = init_keyring(path)
    assert not created_again and again.seal.active == keyring.seal.active


def test_free_text_goes_only_as_the_decision_says_original_redacted_or_not_at_all(keyring: Keyring) -> None:
    """Issue 14: the original is sealed at ingest; reveal opens it, redact gives the redacted
    copy, and a free-text field named in `fields` (or not named at all) is not shared."""
    raw = _event()
    payload: dict[str, object] = raw["payload"]  # type: ignore[assignment]
    child = raw["subject"]
    payload["circumstances"] = f"{child['given_name']} (NHS {child['identifiers']['nhs_number']}) was present."  # type: ignore[index]
    pev = pseudonymised(parse_event_dict(raw), keyring)
    assert "circumstances" in pev.sealed_text and pev.payload["circumstances"] != payload["circumstances"]
    assert child["identifiers"]["nhs_number"] not in pev.model_dump_json()  # type: ignore[index]
    partner = _partner("csc", "mash")
    revealed = recipient_view(pev, _decision(fields=["incident_at"], free_text={"circumstances": "reveal"}),
                              partner, keyring)
    assert revealed.payload["circumstances"] == payload["circumstances"]
    redacted = recipient_view(pev, _decision(fields=["incident_at"], free_text={"circumstances": "redact"}),
                              partner, keyring)
    assert redacted.payload["circumstances"] == pev.payload["circumstances"]
    for decision in (_decision(fields=["incident_at", "circumstances", "child_voice"]), _decision(fields=["*"])):
        view = recipient_view(pev, decision, partner, keyring)
        assert "circumstances" not in view.payload and "child_voice" not in view.payload


def test_a_prebirth_event_view_carries_the_generalised_expected_delivery_date(keyring: Keyring) -> None:
    s = Synth(seed=15)
    raw = s.prebirth_concern()
    pev = pseudonymised(parse_event_dict(raw), keyring)
    view = recipient_view(pev, _decision(demographics=Demographics(dob="year_month")), _partner("csc", "mash"),
                          keyring)
    assert view.subject.expected_delivery_date == raw["subject"]["expected_delivery_date"][:7]  # type: ignore[index]
    assert view.subject.date_of_birth is None


def test_validation_errors_never_echo_input_values() -> None:
    from pydantic import ValidationError

    from bus.records import DeliveredSubject

    with pytest.raises(ValidationError) as info:
        DeliveredSubject.model_validate({"identifiers": {}, "unexpected": "9434765919"})
    assert "9434765919" not in str(info.value)


def test_saving_the_keyring_never_writes_through_a_file_left_at_a_temporary_name(tmp_path: Path) -> None:
    from bus.pseudonymise.keyring import load_keyring, save_keyring

    path = tmp_path / "keyring.json"
    elsewhere = tmp_path / "attacker-readable.json"
    elsewhere.touch(mode=0o644)
    (tmp_path / "keyring.tmp").symlink_to(elsewhere)  # the old code's fixed temporary name
    keyring = Keyring.generate()
    save_keyring(keyring, path)
    assert elsewhere.read_text() == "" and path.stat().st_mode & 0o777 == 0o600
    assert load_keyring(path).token.active == keyring.token.active
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attacker-readable.json", "keyring.json", "keyring.tmp"]


def test_two_rotations_at_once_keep_both_new_keys(tmp_path: Path) -> None:
    import threading

    from bus.pseudonymise.keyring import keyring_lock, load_keyring, save_keyring

    path = tmp_path / "keyring.json"
    save_keyring(Keyring.generate(), path)

    def rotate() -> None:
        with keyring_lock(path):
            save_keyring(load_keyring(path).rotated(), path)

    threads = [threading.Thread(target=rotate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(load_keyring(path).seal.keys) == 9  # the first and eight rotations: none dropped
