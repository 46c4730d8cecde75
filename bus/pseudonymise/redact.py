"""Free-text redaction: the subject's names, NHS numbers, UPNs, UK phone numbers, emails and
postcodes are replaced by typed placeholders such as [NHS_NUMBER].

Hand-written rules, measured by `sgbus bench redaction` on a labelled synthetic corpus.
Checksums are verified (NHS modulus 11, UPN check letter) so that other ten-digit numbers,
such as police references or dates run together, are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.identifiers import nhs_number_is_valid, upn_is_valid


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    kind: str


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_NHS = re.compile(r"(?<![\w])(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?![\w])")
_UPN = re.compile(r"(?<![\w])[A-Za-z]\d{11}[0-9A-Za-z](?![\w])")
# A phone candidate starts with +44 or 0 and runs over digits, spaces, hyphens, dots and
# brackets; it counts only if it holds a UK number's 10 or 11 digits (see _is_uk_phone).
_PHONE = re.compile(r"(?<![\w+])(?:\+\s?44|\(\s?0|0)[\d\s().-]{8,18}\d(?!\d)")
_POSTCODE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{1,2}\d[A-Za-z\d]?)\s*(\d[A-Za-z]{2})(?![A-Za-z0-9])")
# Outward codes need a letter-digit start; inward codes never use C I K M O V.
_INWARD = re.compile(r"^\d[ABD-HJLNP-UW-Z]{2}$")


def _is_uk_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if digits.startswith("44"):
        digits = "0" + digits[2:].removeprefix("0")
    if len(digits) < 10 or digits[0] != "0":
        return False
    # Only some 01 area codes have ten-digit numbers; mobiles, 02, 03, 05 and 08 have eleven.
    return len(digits) in (10, 11) if digits[1] == "1" else len(digits) == 11 and digits[1] in "23578"


def _name_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    parts = sorted({n.strip() for n in names if n and len(n.strip()) >= 2}, key=len, reverse=True)
    if not parts:
        return None
    alternatives = "|".join(re.escape(p) for p in parts)
    return re.compile(rf"(?<![\w])(?:{alternatives})(?:['\u2019]s)?(?![\w])", re.IGNORECASE)


def find_spans(text: str, names: Iterable[str] = ()) -> list[Span]:
    """Every span to redact, overlaps resolved (earlier start, then longer span wins)."""
    found: list[Span] = []
    found += [Span(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text)]
    for m in _NHS.finditer(text):
        if nhs_number_is_valid(m.group(1) + m.group(2) + m.group(3)):
            found.append(Span(m.start(), m.end(), "NHS_NUMBER"))
    found += [Span(m.start(), m.end(), "UPN") for m in _UPN.finditer(text) if upn_is_valid(m.group(0).upper())]
    for m in _PHONE.finditer(text):
        candidate = m.group(0).rstrip(" .-(")
        if _is_uk_phone(candidate):
            found.append(Span(m.start(), m.start() + len(candidate), "PHONE"))
    for m in _POSTCODE.finditer(text):
        if _INWARD.match(m.group(2).upper()):
            found.append(Span(m.start(), m.end(), "POSTCODE"))
    pattern = _name_pattern(names)
    if pattern is not None:
        found += [Span(m.start(), m.end(), "NAME") for m in pattern.finditer(text)]
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    kept: list[Span] = []
    for span in found:
        if kept and span.start < kept[-1].end:
            continue
        previous = kept[-1] if kept else None
        if (previous is not None and previous.kind == span.kind == "NAME"
                and text[previous.end:span.start].strip() == ""):
            kept[-1] = Span(previous.start, span.end, "NAME")  # "Ava Testwood" is one name
            continue
        kept.append(span)
    return kept


def redact(text: str, names: Iterable[str] = ()) -> str:
    """`text` with every span found replaced by its placeholder, e.g. [PHONE]."""
    out, last = [], 0
    for span in find_spans(text, names):
        out.append(text[last:span.start])
        out.append(f"[{span.kind}]")
        last = span.end
    out.append(text[last:])
    return "".join(out)
