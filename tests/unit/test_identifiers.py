import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.identifiers import (
    NhsNumber,
    Postcode,
    Upn,
    nhs_number_is_valid,
    postcode_district,
    upn_check_letter,
    upn_is_valid,
)


@pytest.mark.parametrize("value", ["9434765919", "4010232137", "9990000018"])
def test_valid_nhs_numbers_pass_modulus_11(value: str) -> None:
    assert nhs_number_is_valid(value)


@pytest.mark.parametrize(
    "value",
    ["9434765918", "943476591", "94347659190", "94347659A9", "", "0000000001", "1234567890"],
)
def test_invalid_nhs_numbers_are_refused(value: str) -> None:
    assert not nhs_number_is_valid(value)


def test_nhs_number_type_normalises_spaces_and_rejects_bad_checksum() -> None:
    adapter = TypeAdapter(NhsNumber)
    assert adapter.validate_python("943 476 5919") == "9434765919"
    with pytest.raises(ValidationError, match="modulus 11"):
        adapter.validate_python("943 476 5918")


def test_upn_check_letter_round_trip() -> None:
    body = "999123456789"
    upn = upn_check_letter(body) + body
    assert upn_is_valid(upn)
    assert TypeAdapter(Upn).validate_python(upn.lower()) == upn


@pytest.mark.parametrize("value", ["A99912345678", "I999123456789", "A9991234567890", "A99912345678!"])
def test_malformed_upns_are_refused(value: str) -> None:
    assert not upn_is_valid(value)


def test_upn_with_wrong_check_letter_is_refused() -> None:
    body = "999123456789"
    good = upn_check_letter(body)
    wrong = "B" if good != "B" else "C"
    assert not upn_is_valid(wrong + body)


def test_postcode_is_normalised_and_generalised_to_district() -> None:
    assert TypeAdapter(Postcode).validate_python(" ns1   4ab ") == "NS1 4AB"
    assert postcode_district("NS1 4AB") == "NS1"
    with pytest.raises(ValidationError, match="UK postcode"):
        TypeAdapter(Postcode).validate_python("12345")


@pytest.mark.parametrize("value", ["\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669",  # Arabic-Indic
                                   "".join(chr(0xFF10 + int(d)) for d in "9434765919"),  # full-width
                                   "943476591\u0669"])
def test_an_nhs_number_in_other_scripts_digits_is_refused(value: str) -> None:
    """Found in review: accepted, it tokenised apart from the same number in ASCII digits, so
    the child became another child to every partner (and to the concern stage)."""
    assert not nhs_number_is_valid(value)
    with pytest.raises(ValidationError):
        TypeAdapter(NhsNumber).validate_python(value)


@pytest.mark.parametrize("value", ["Ava\u202eTest", "Av\x00a", "A\u2066va", "Ava\x1b"])
def test_a_name_with_control_or_direction_characters_is_refused(value: str) -> None:
    from schemas.identifiers import PersonName

    with pytest.raises(ValidationError):
        TypeAdapter(PersonName).validate_python(value)


def test_names_in_other_scripts_are_kept() -> None:
    from schemas.identifiers import PersonName

    for name in ("Zoë", "Siobhán", "نور", "अनु\u200dराधा"):  # the last joined with a zero-width joiner
        assert TypeAdapter(PersonName).validate_python(name) == name
