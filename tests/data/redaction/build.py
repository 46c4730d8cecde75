#!/usr/bin/env python3
"""Build the synthetic redaction corpus (JSONL) from the hand-written sources.

Reads source-tune.md and source-heldout.md (in this directory), strips the
inline {KIND|value} markup and writes corpus-tune.jsonl / corpus-heldout.jsonl.
Standard library only. Fails loudly (CorpusError) on any
malformed block, span mismatch, invalid NHS number or UPN, non-reserved phone
number, non-example email domain, or unlabelled identifier left in the text.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = [("source-tune.md", "corpus-tune.jsonl"),
         ("source-heldout.md", "corpus-heldout.jsonl")]
KINDS = ("PERSON", "ADDRESS", "DOB", "NHS_NUMBER", "UPN", "PHONE", "EMAIL", "POSTCODE")
MARK = re.compile(r"\{([A-Z_]+)\|([^{}|]+)\}")
UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


class CorpusError(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    """Fail loudly (not an assert, so it survives python -O)."""
    if not cond:
        raise CorpusError(msg)


def nhs_valid(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not re.fullmatch(r"\d{10}", digits) or not digits.startswith("999"):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def upn_valid(value: str) -> bool:
    if not re.fullmatch(r"[A-Z]\d{12}", value) or value[1:4] != "999":
        return False
    total = sum(int(d) * w for d, w in zip(value[1:], range(2, 14), strict=True))
    return UPN_LETTERS[total % 23] == value[0]


def phone_valid(value: str) -> bool:
    d = re.sub(r"[ ()-]", "", value)
    if d.startswith("+44"):
        d = "0" + d[3:]
    return bool(re.fullmatch(r"07700900\d{3}|01632960\d{3}|02079460\d{3}|01134960\d{3}", d))


def email_valid(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.+'-]+@example\.(com|org|net)", value, re.I))


POSTCODE_RE = re.compile(r"^[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}$")

# Patterns that must never occur outside a labelled span (leak checks).
LEAKS = {
    "EMAIL": re.compile(r"[\w.+'-]+@[\w-]+\.[\w.]+"),
    "PHONE": re.compile(r"(?:\+44\s?|0)(?:7700|1632|20\s?7946|113\s?496)[\d ]{6,9}"),
    "NHS_NUMBER": re.compile(r"\b999[ -]?\d{3}[ -]?\d{4}\b"),
    "UPN": re.compile(r"\b[A-Z]999\d{9}\b"),
    "POSTCODE": re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b", re.I),
}


def parse_block(raw: str, where: str) -> dict:
    lines = raw.strip("\n").split("\n")
    head = lines[0].strip()
    check(head.startswith("subject: "), f"{where}: block must start with 'subject:' -> {head!r}")
    given, _, family = head[len("subject: "):].strip().partition(" ")
    check(given and family, f"{where}: subject needs 'Given Family' -> {head!r}")
    body = "\n".join(line.rstrip() for line in lines[1:]).strip()
    check(body, f"{where}: empty text")
    text_parts, spans, pos, out_len = [], [], 0, 0
    for m in MARK.finditer(body):
        kind, value = m.group(1), m.group(2)
        check(kind in KINDS, f"{where}: unknown KIND {kind!r}")
        check(value == value.strip(), f"{where}: value has outer whitespace {value!r}")
        pre = body[pos:m.start()]
        text_parts.append(pre)
        out_len += len(pre)
        spans.append([out_len, out_len + len(value), kind, value])
        text_parts.append(value)
        out_len += len(value)
        pos = m.end()
    text_parts.append(body[pos:])
    text = "".join(text_parts)
    for ch in "{}|":
        check(ch not in text, f"{where}: stray markup {ch!r} in {text!r}")
    for start, end, kind, value in spans:
        check(text[start:end] == value, f"{where}: span text mismatch {value!r}")
        if kind == "NHS_NUMBER":
            check(nhs_valid(value), f"{where}: invalid NHS number {value!r}")
        elif kind == "UPN":
            check(upn_valid(value), f"{where}: invalid UPN {value!r}")
        elif kind == "PHONE":
            check(phone_valid(value), f"{where}: phone not in Ofcom drama range {value!r}")
        elif kind == "EMAIL":
            check(email_valid(value), f"{where}: email not on an example domain {value!r}")
        elif kind == "POSTCODE":
            check(POSTCODE_RE.match(value), f"{where}: bad postcode {value!r}")
    # Leak checks: identifiers-shaped strings must be inside a span.
    covered = [False] * len(text)
    for start, end, _k, _v in spans:
        for i in range(start, end):
            covered[i] = True
    for kind, rx in LEAKS.items():
        for m in rx.finditer(text):
            if not any(covered[m.start():m.end()]):
                raise CorpusError(f"{where}: unlabelled {kind}-like string {m.group()!r}")
    return {"text": text, "subject_names": [given, family],
            "spans": [[s, e, k] for s, e, k, _v in spans]}


def build(src: Path, dst: Path) -> tuple[list[dict], Counter]:
    blocks = re.split(r"^---[ \t]*$", src.read_text(encoding="utf-8"), flags=re.M)
    records = []
    for i, raw in enumerate(blocks, 1):
        if not raw.strip():
            continue
        records.append(parse_block(raw, f"{src.name} block {i}"))
    counts = Counter(k for r in records for _s, _e, k in r["spans"])
    with dst.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return records, counts


def main() -> int:
    all_texts = {}
    totals = Counter()
    for src_name, dst_name in FILES:
        records, counts = build(HERE / src_name, HERE / dst_name)
        print(f"{dst_name}: {len(records)} texts, {sum(counts.values())} spans")
        for kind in KINDS:
            print(f"  {kind:<11} {counts.get(kind, 0)}")
        totals += counts
        all_texts[src_name] = {r["text"] for r in records}
    dup = set.intersection(*all_texts.values())
    check(not dup, f"texts shared between tune and held-out: {sorted(dup)[:3]}")
    print("total: " + ", ".join(f"{k}={totals.get(k, 0)}" for k in KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
