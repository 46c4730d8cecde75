"""Free-text redaction: Presidio + spaCy + UK recognisers, typed placeholders.

The redactor is imported on first use, not with the package: Presidio and spaCy take ~80 MB
once imported, and a process that never redacts (the route and audit stages, a worker whose
ingest runs in its own process) need not carry them for `errors` or `model`."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# Presidio logs its device at import (INFO), before any module here can configure it; nothing
# it logs is wanted (see redactor._Timeouts), so quieten it first.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from bus.redaction.redactor import Redactor, Span, apply, default_redactor, find_spans, redact, warm_up

__all__ = ["Redactor", "Span", "apply", "default_redactor", "find_spans", "redact", "warm_up"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("bus.redaction.redactor"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
