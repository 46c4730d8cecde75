"""Measure free-text redaction: on a labelled synthetic corpus with planted values and
distractors, or on any labelled corpus file (`python -m bench redaction --corpus FILE.jsonl`)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.redaction import default_redactor
from schemas.identifiers import nhs_number_check_digit
from schemas.synthetic import FAMILY, GIVEN, synthetic_nhs_number, synthetic_upn

KINDS = ("PERSON", "NHS_NUMBER", "UPN", "PHONE", "EMAIL", "POSTCODE", "ADDRESS")
#: the kinds a corpus file labels (README: "Redaction")
CORPUS_KINDS = ("PERSON", "ADDRESS", "DOB", "NHS_NUMBER", "UPN", "PHONE", "EMAIL", "POSTCODE")


@dataclass
class Sample:
    text: str = ""
    names: list[str] = field(default_factory=list)
    planted: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, chunk: str, kind: str | None = None) -> None:
        if kind is not None:
            self.planted.append((len(self.text), len(self.text) + len(chunk), kind))
        self.text += chunk


def _phone(rng: random.Random) -> str:
    n = rng.randrange(1000)
    return rng.choice([
        f"07700 900{n:03d}", f"07700900{n:03d}", f"+44 7700 900{n:03d}", f"+44 (0)7700 900{n:03d}",
        f"01632 960{n:03d}", f"(01632) 960{n:03d}", f"0161 496 0{n:03d}", f"020 7946 0{n:03d}",
        f"0113-496-0{n:03d}", f"+441632960{n:03d}",
    ])


def _nhs(rng: random.Random) -> str:
    v = synthetic_nhs_number(rng)
    return rng.choice([v, f"{v[:3]} {v[3:6]} {v[6:]}", f"{v[:3]}-{v[3:6]}-{v[6:]}"])


def _invalid_ten_digits(rng: random.Random) -> str:
    while True:
        nine = "".join(str(rng.randrange(10)) for _ in range(9))
        check = nhs_number_check_digit(nine)
        wrong = (check + 1) % 10 if check is not None else 0
        candidate = nine + str(wrong)
        if check is None or wrong != check:
            return candidate


def _postcode(rng: random.Random) -> str:
    outward = rng.choice(["NS1", "NS10", "SS4", "M1", "LS6", "B12", "SW1A", "EC1V"])
    inward = f"{rng.randrange(10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
    form = rng.random()
    if form < 0.6:
        return f"{outward} {inward}"
    return f"{outward}{inward}" if form < 0.8 else f"{outward} {inward}".lower()


def _distractor(rng: random.Random) -> str:
    return rng.choice([
        f" Police ref NSP-{rng.randrange(10**6, 10**7)}.",
        f" Seen on {rng.randrange(1, 29):02d}/{rng.randrange(1, 13):02d}/2026"
        f" at {rng.randrange(24):02d}:{rng.randrange(60):02d}.",
        f" Missed {rng.randrange(2, 40)} sessions this term.",
        f" Case number {_invalid_ten_digits(rng)} (not an NHS number).",
        f" Room {rng.randrange(1, 300)}, Year {rng.randrange(1, 12)}.",
        f" Aged {rng.randrange(2, 17)}; £{rng.randrange(5, 500)} found.",
        " Referred by the DSL to the MASH on Monday.",
        f" Flat {rng.randrange(1, 40)}B, block C.",
        " Escalated to team manager; strategy discussion held.",
    ])


def make_corpus(count: int = 2000, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        s = Sample(names=[given, family])
        for _ in range(rng.randrange(1, 4)):
            kind = rng.choice(KINDS)
            if kind == "PERSON":
                name = rng.choice([given, family, f"{given} {family}"])
                name = rng.choice([name, name.lower(), name.upper()])
                if rng.random() < 0.3:
                    s.add(name + "'s", "PERSON")
                    s.add(" mum said they had not slept.")
                else:
                    s.add("Spoke with ")
                    s.add(name, "PERSON")
                    s.add(" at school.")
            elif kind == "NHS_NUMBER":
                s.add(rng.choice(["NHS no. ", "NHS number: ", "nhs "]))
                s.add(_nhs(rng), "NHS_NUMBER")
                s.add(".")
            elif kind == "UPN":
                s.add("UPN ")
                upn = synthetic_upn(rng)
                s.add(upn if rng.random() < 0.8 else upn.lower(), "UPN")
                s.add(" on roll.")
            elif kind == "PHONE":
                s.add(rng.choice(["Call mum on ", "Carer's number ", "Tel: "]))
                s.add(_phone(rng), "PHONE")
                s.add(rng.choice([".", " after 4pm.", ""]))
            elif kind == "EMAIL":
                s.add("Email ")
                local = rng.choice([f"{given}.{family}{rng.randrange(99)}".lower(), f"parent{rng.randrange(999)}"])
                s.add(f"{local}@{rng.choice(['example.org', 'mail.example.co.uk', 'example.com'])}", "EMAIL")
                s.add(" if needed.")
            else:
                s.add("Staying at ")
                s.add(f"{rng.randrange(1, 200)} Acacia Road", "ADDRESS")
                s.add(", ")
                s.add(_postcode(rng), "POSTCODE")
                s.add(".")
            s.add(_distractor(rng))
            s.add(" ")
        samples.append(s)
    return samples


@dataclass
class RedactionReport:
    texts: int
    planted: Counter[str]
    found: Counter[str]
    spans: int
    true_spans: int

    @property
    def recall(self) -> float:
        total = sum(self.planted.values())
        return sum(self.found.values()) / total if total else 1.0

    @property
    def precision(self) -> float:
        return self.true_spans / self.spans if self.spans else 1.0

    def recall_by_kind(self) -> dict[str, float]:
        return {k: self.found[k] / n for k, n in sorted(self.planted.items()) if n}

    def as_json(self) -> dict[str, Any]:
        return {"texts": self.texts, "recall": {k: round(v, 4) for k, v in self.recall_by_kind().items()},
                "precision": round(self.precision, 4), "overall_recall": round(self.recall, 4),
                "labelled": dict(sorted(self.planted.items())), "redacted_spans": self.spans}

    def lines(self) -> list[str]:
        out = [f"corpus: {self.texts} texts, {sum(self.planted.values())} planted values"]
        for kind in [k for k in KINDS if k in self.planted] + sorted(set(self.planted) - set(KINDS)):
            p, f = self.planted[kind], self.found[kind]
            out.append(f"  {kind:<11} planted {p:>5}  redacted {f:>5}  recall {100 * f / p if p else 100:6.2f}%")
        out.append(f"recall {100 * self.recall:.2f}%  precision {100 * self.precision:.2f}% "
                   f"({self.true_spans} of {self.spans} redactions hit a planted value)")
        return out


def measure(samples: list[Sample]) -> RedactionReport:
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    spans = true_spans = 0
    found_spans = default_redactor().find_spans_many([(s.text, s.names) for s in samples])
    for s, hits in zip(samples, found_spans, strict=True):
        spans += len(hits)
        for start, end, kind in s.planted:
            planted[kind] += 1
            if any(h.start <= start and h.end >= end for h in hits):
                found[kind] += 1
        true_spans += sum(1 for h in hits if any(h.start < e and h.end > b for b, e, _ in s.planted))
    return RedactionReport(len(samples), planted, found, spans, true_spans)


class CorpusError(ValueError):
    """A corpus file line that is not a labelled text; the message names the line and field."""


def load_corpus(path: Path) -> list[Sample]:
    """One JSON object per line: {"text", "subject_names": [...], "spans": [[start, end, KIND], ...]}."""
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            text, names = raw["text"], raw.get("subject_names", [])
            spans = [(int(b), int(e), str(k)) for b, e, k in raw["spans"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"{path}:{number}: not a labelled text ({type(exc).__name__})") from None
        if not isinstance(text, str) or not isinstance(names, list):
            raise CorpusError(f"{path}:{number}: text must be a string and subject_names a list")
        for b, e, k in spans:
            if k not in CORPUS_KINDS:
                raise CorpusError(f"{path}:{number}: spans: unknown kind {k} (one of {', '.join(CORPUS_KINDS)})")
            if not 0 <= b < e <= len(text):
                raise CorpusError(f"{path}:{number}: spans: [{b}, {e}] is outside the text")
        samples.append(Sample(text=text, names=[str(n) for n in names], planted=spans))
    return samples


def held_out_corpus(repo: Path) -> Path | None:
    path = repo / "tests" / "data" / "redaction" / "corpus-heldout.jsonl"
    return path if path.is_file() else None


def run_redaction(repo: Path, events: int = 5000) -> dict[str, Any]:
    """For `python -m bench run`: recall and precision on the held-out corpus, ingest events/s with
    and without redaction, and CPU per text by length."""
    import time

    from bench.pseudonymise import bench_pseudonymise
    from bus.redaction import default_redactor

    out: dict[str, Any] = {}
    corpus = held_out_corpus(repo)
    redactor = default_redactor()
    if corpus is not None:
        samples = load_corpus(corpus)
        out["held_out"] = measure(samples).as_json()
        texts = [(s.text, s.names) for s in samples]
        redactor.redact_many(texts[:10])
        began = time.process_time()
        redactor.redact_many(texts)
        out["corpus_ms_per_text"] = round(1000 * (time.process_time() - began) / len(texts), 2)
        out["corpus_mean_chars"] = round(sum(len(t) for t, _ in texts) / len(texts))
        long = " ".join(t for t, _ in texts)[:2000]
        began = time.process_time()
        for _ in range(5):
            redactor.redact(long)
        out["ms_per_2000_char_text"] = round(1000 * (time.process_time() - began) / 5, 1)
    out["ingest"] = [{"stage": r.stage, "events_per_s": round(r.per_s)} for r in bench_pseudonymise(events)]
    return out
