"""Summarise a py-spy profile (collapsed stacks): where the worker's CPU time goes."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# (label, substring of a frame) -> share of samples whose stack contains it (inclusive time).
STAGES: list[tuple[str, str | tuple[str, ...]]] = [
    # The all-in-one worker routes at ingest, and with its ingest process (the benchmark's
    # workers) its batches are finished in tasks of their own, not under ingest_agent's frame.
    ("ingest: register, send and route each batch", "ingest_prepared (bus/agents/pipeline.py"),
    ("  route: decide, views, audit records, sends", "route_events (bus/agents/pipeline.py"),
    ("    policy query (the client's own work: waiting is not sampled)", "decide_batch ("),
    ("    recipient views", "recipient_view ("),
    ("    audit records", "audit_record ("),
    ("ingest: parse, verify, pseudonymise in the worker's own process (not with its ingest process, "
     "which is not sampled)", "prepare_batch (bus/ingest.py"),
    ("  validate raw event (pydantic)", "parse_event (schemas/registry.py"),
    ("  free-text redaction (Presidio + spaCy)", "redact_texts ("),
    ("  tokenise + seal", "pseudonymise_at_ingest ("),
    ("helper processes (ingest, audit): waiting for and unpickling their results",
     ("concurrent/futures/process.py", "bus/ingest_process.py", "bus/helper_process.py")),
    ("route agent (replays; stage workers)", "route_agent (bus/agents/pipeline.py"),
    ("audit agent + hash-chained store",
     ("audit_agent (bus/agents/pipeline.py", "bus/audit/chain.py", "bus/audit_process.py")),
    ("Faust/aiokafka send path", "aiokafka/producer"),
    ("Faust/aiokafka fetch path", ("aiokafka/consumer", "faust/transport/consumer.py")),
    ("serialise to JSON (pydantic)", "model_dump_json"),
    ("Prometheus metrics", "prometheus_client/"),
    # Inclusive, so it contains the agents above; the rest of the samples are Faust's
    # consumer thread and the worker's threads (the store's writes, results from the ingest process).
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
    for label, needles in STAGES:
        anyof = (needles,) if isinstance(needles, str) else needles
        hits = sum(count for stack, count in stacks if any(n in stack for n in anyof))
        stages.append({"stage": label, "share": round(hits / total, 3)})
    own: Counter[str] = Counter()
    for stack, count in stacks:  # the leaf frame is where the sample's time was spent
        own[_short(stack.rsplit(";", 1)[-1])] += count
    return {"samples": total, "stages": stages,
            "self_top": [{"function": f, "share": round(n / total, 3)} for f, n in own.most_common(top)]}
