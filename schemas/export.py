"""Export JSON Schema for every event type and the envelope."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.envelope import Envelope
from schemas.registry import EVENT_MODELS


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    items: dict[str, type[BaseModel]] = {"envelope": Envelope, **EVENT_MODELS}
    for name, model in items.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
