"""Free-text redaction: Presidio + spaCy + UK recognisers, typed placeholders."""

from bus.redaction.redactor import Redactor, Span, apply, default_redactor, find_spans, redact, warm_up

__all__ = ["Redactor", "Span", "apply", "default_redactor", "find_spans", "redact", "warm_up"]
