"""Summarise a py-spy profile (collapsed stacks): where the worker's CPU time goes."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# (label, substring of a frame) -> share of samples whose stack contains it (inclusive time).
STAGES: list[tuple[str, str]] = [
    ("ingest agent (whole)", "ingest_agent (bus/agents/pipeline.py"),
    ("  ingest: validate raw event (pydantic)", "parse_event (schemas/registry.py"),
    ("  ingest: free-text redaction (Presidio + spaCy), per batch", "redact_texts ("),
    ("  ingest: tokenise + seal", "pseudonymise_at_ingest ("),
    ("    tokens (HMAC-SHA256, base32)", "token (bus/pseudonymise/operators/token.py"),
    ("    sealed identity (AES-GCM)", "seal (bus/pseudonymise/operators/seal.py"),
    ("route agent (whole)", "route_agent (bus/agents/pipeline.py"),
    ("  route: parse sg.events records (pydantic)", "model_validate_json"),
    ("  route: policy query incl. waiting on OPA", "decide_batch ("),
    ("  route: recipient views", "recipient_view ("),
    ("  route: audit records", "audit_record ("),
    ("audit agent + hash-chained store", "bus/audit/chain.py"),
    ("Faust/aiokafka send path", "aiokafka/producer"),
    ("Faust/aiokafka fetch path", "aiokafka/consumer"),
    ("serialise to JSON (pydantic)", "model_dump_json"),
    # Inclusive, so it contains the agents above; the rest of the samples are Faust's
    # consumer thread and the audit store's writer thread.
    ("main event loop, everything run on it", "asyncio/base_events.py"),
]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarise_collapsed(text: str, top: int = 12) -> dict[str, Any]:
    """Inclusive share per pipeline stage and the functions with the most self time."""
    stacks: list[tuple[str, int]] = []
    for line in text.splitlines():
        frames, _, samples = line.rpartition(" ")
        if frames and samples.isdigit():
            stacks.append((frames, int(samples)))
    total = sum(n for _, n in stacks)
    if not total:
        return {"samples": 0, "stages": [], "self_top": []}
    stages: list[dict[str, Any]] = []
    for label, needle in STAGES:
        hits = sum(count for stack, count in stacks if needle in stack)
        stages.append({"stage": label, "share": round(hits / total, 3)})
    own: Counter[str] = Counter()
    for stack, count in stacks:  # the leaf frame is where the sample's time was spent
        own[_short(stack.rsplit(";", 1)[-1])] += count
    return {"samples": total, "stages": stages,
            "self_top": [{"function": f, "share": round(n / total, 3)} for f, n in own.most_common(top)]}
