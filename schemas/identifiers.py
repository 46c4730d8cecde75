"""Validating types for children's identifiers and demographics (NHS number, UPN, ...)."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

_UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # DfE check-letter alphabet: no I, O, S
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")


def nhs_number_is_valid(value: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number."""
    # ASCII digits only: str.isdigit() takes Arabic-Indic or full-width digits too, and the same
    # child's number written in them tokenised differently (another child to every partner).
    if not re.fullmatch(r"[0-9]{10}", value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])


def nhs_number_check_digit(first_nine: str) -> int | None:
    """The check digit for nine digits, or None when no valid number has them."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def _normalise_nhs(value: object) -> object:
    return re.sub(r"[\s-]", "", value) if isinstance(value, str) else value


def _check_nhs(value: str) -> str:
    if not nhs_number_is_valid(value):
        raise ValueError("not a valid NHS number (10 digits with a modulus 11 check digit)")
    return value


def upn_check_letter(body: str) -> str:
    """DfE check letter for the 12 characters after it (weights 2..13, modulus 23)."""
    total = 0
    for weight, char in enumerate(body, start=2):
        total += weight * (int(char) if char.isdigit() else _UPN_LETTERS.index(char))
    return _UPN_LETTERS[total % 23]


def upn_is_valid(value: str) -> bool:
    if not re.fullmatch(rf"[{_UPN_LETTERS}][0-9]{{11}}[0-9{_UPN_LETTERS}]", value):
        return False
    return upn_check_letter(value[1:]) == value[0]


def _check_upn(value: str) -> str:
    if not upn_is_valid(value):
        raise ValueError("not a valid Unique Pupil Number (13 characters with a DfE check letter)")
    return value


def _normalise_postcode(value: object) -> object:
    return re.sub(r"\s+", " ", value.strip().upper()) if isinstance(value, str) else value


def _check_postcode(value: str) -> str:
    match = _POSTCODE.match(value)
    if match is None:
        raise ValueError("not a UK postcode")
    return f"{match.group(1)} {match.group(2)}"


def postcode_district(postcode: str) -> str:
    """Outward code (district) of a validated postcode: 'NS1 4AB' -> 'NS1'."""
    return postcode.split(" ", 1)[0]


NhsNumber = Annotated[str, BeforeValidator(_normalise_nhs), AfterValidator(_check_nhs)]
Upn = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True), AfterValidator(_check_upn)]
LaChildId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{3}-[A-Z0-9]{4,16}$")]
PolicePersonId = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,4}/[0-9]{4,12}$")]
Postcode = Annotated[str, BeforeValidator(_normalise_postcode), AfterValidator(_check_postcode)]
def _check_name(value: str) -> str:
    if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in value):
        raise ValueError("a name may not hold control or text-direction characters")
    return value


#: embeddings, overrides and isolates: a name that reads one way and compares another
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

PersonName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(pattern=r"^[^\d\n\r\t]+$"), AfterValidator(_check_name),
]
FreeText = Annotated[str, StringConstraints(max_length=2000)]
OrgId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{1,31}$")]
