"""The synthetic sample files in connectors/samples/ (one per connector), and the demo's use of
them: one inbound file per agency converted by its connector."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import Context, Converted, Rejection
from connectors.inbound import CONNECTORS, connector_settings

SAMPLES = Path(__file__).parent / "samples"
#: (connector, publishing org_id, sample file): one per agency
DEMO = (
    ("encompass", "NSP", "encompass/notifications.json"),
    ("school-sessions", "900001", "school-sessions/sessions.json"),
    ("nhs-fhir", "RNX", "nhs-fhir/ed-attendances.xml"),
    ("cin-census", "N01", "cin-census/cin-2024-25.xml"),
)


@dataclass(frozen=True)
class SampleRun:
    connector: str
    org_id: str
    file: Path
    events: list[dict[str, Any]]
    rejected: list[str]


def demo_runs(data_dir: Path, now: datetime | None = None) -> list[SampleRun]:
    """Each demo sample converted. Event ids are replaced by fresh ones: a connector's ids are
    fixed by the source records (so `run` sends each once), and the demo is run many times on
    one stack, where the same id with new content would be dead-lettered as a reused id."""
    runs = []
    for name, org, rel in DEMO:
        connector = CONNECTORS[name]()
        ctx = Context(org_id=org, now=now or datetime.now(UTC), settings=connector_settings(name, data_dir))
        events, rejected = [], []
        for result in connector.convert(SAMPLES / rel, ctx):
            if isinstance(result, Rejection):
                rejected.append(str(result))
            elif isinstance(result, Converted):
                events.append({**result.event, "event_id": str(uuid.uuid4())})
        runs.append(SampleRun(name, org, SAMPLES / rel, events, rejected))
    return runs
