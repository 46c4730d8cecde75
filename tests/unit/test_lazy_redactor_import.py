"""Presidio and spaCy (~80 MB once imported) are imported only where free text is redacted:
not by the route or audit stage, nor by a worker whose ingest runs in its own process."""

from __future__ import annotations

import subprocess
import sys


def _imported_after(statement: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{statement}\nimport sys\n"
                          "print(' '.join(m for m in ('spacy', 'presidio_analyzer') if m in sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_the_worker_pipeline_and_redaction_errors_import_without_presidio_or_spacy() -> None:
    assert _imported_after("import bus.worker, bus.agents.pipeline, bus.ingest, bus.ingest_process, "
                           "bus.redaction.errors, bus.redaction.model") == set()


def test_the_redactor_itself_still_brings_them_in_on_first_use() -> None:
    assert _imported_after("from bus.redaction import default_redactor") == {"spacy", "presidio_analyzer"}


def test_the_errors_are_the_redactors_own() -> None:
    from bus.redaction import errors, redactor

    assert redactor.RedactorUnavailable is errors.RedactorUnavailable
    assert redactor.RedactionFailed is errors.RedactionFailed
