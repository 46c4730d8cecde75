"""Free-text redaction: Presidio + spaCy + UK recognisers, typed placeholders."""

import logging

# Presidio logs its device at import (INFO), before any module here can configure it; nothing
# it logs is wanted (see redactor._Timeouts), so quieten it first.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

from bus.redaction.redactor import (  # noqa: E402 - after quietening Presidio's import-time logging
    Redactor,
    Span,
    apply,
    default_redactor,
    find_spans,
    redact,
    warm_up,
)

__all__ = ["Redactor", "Span", "apply", "default_redactor", "find_spans", "redact", "warm_up"]
