"""The redactor's errors, importable without Presidio or spaCy (~80 MB once imported)."""

from __future__ import annotations

from bus.exceptions import SgbusError


class RedactorUnavailable(SgbusError):
    """The analyzer cannot be built (model missing or not the pinned one): hold, do not drop."""


class RedactionFailed(SgbusError):
    """A text could not be fully analysed (a pattern timed out): it must not go on half redacted."""
