"""`python -m bench redaction --corpus`: any labelled corpus in the documented format is scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.redaction import CorpusError, load_corpus, measure

REPO = Path(__file__).parents[2]
HELD_OUT = REPO / "tests" / "data" / "redaction" / "corpus-heldout.jsonl"


def test_the_held_out_corpus_loads_and_every_kind_is_labelled() -> None:
    samples = load_corpus(HELD_OUT)
    assert len(samples) >= 100
    kinds = {k for s in samples for _, _, k in s.planted}
    assert kinds == {"PERSON", "ADDRESS", "DOB", "NHS_NUMBER", "UPN", "PHONE", "EMAIL", "POSTCODE"}


def test_a_span_counts_only_when_one_redaction_covers_it(tmp_path: Path) -> None:
    text = "Call 07700 900123 or see Ava at 14 Larch Road."
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": text, "subject_names": ["Ava", "Testwood"], "spans": [
        [5, 17, "PHONE"], [25, 28, "PERSON"], [29, 45, "ADDRESS"]]}) + "\n")
    report = measure(load_corpus(corpus))
    # "14 Larch Road" is redacted, but the label also holds "at ": not covered, so not found.
    assert report.recall_by_kind() == {"ADDRESS": 0.0, "PERSON": 1.0, "PHONE": 1.0}
    assert report.precision == 1.0


def test_a_malformed_corpus_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "spans": [[0, 1, "PERSON"]]}\n{"text": "y", "spans": [[0, 1, "SHOE_SIZE"]]}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: spans: unknown kind SHOE_SIZE"):
        load_corpus(bad)


def test_the_cli_prints_json_recall_precision_and_overall_recall() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "redaction", "--corpus", str(HELD_OUT), "--json"],
                         capture_output=True, text=True, check=True, timeout=120, cwd=HELD_OUT.parents[3])
    report = json.loads(out.stdout)
    assert set(report) >= {"recall", "precision", "overall_recall"}
    assert report["recall"]["NHS_NUMBER"] == 1.0  # checksum-verified identifiers: all found
