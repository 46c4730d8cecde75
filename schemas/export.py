"""Export JSON Schema for every event type, the envelope, and OPA's input."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.envelope import Envelope
from schemas.policy_input import PolicyInput
from schemas.registry import EVENT_MODELS

OPA_INPUT_SCHEMA = "opa-input.schema.json"


def rendered_schemas() -> dict[str, str]:
    """file name -> JSON text, exactly as `export_schemas` writes it."""
    items: dict[str, type[BaseModel]] = {"envelope": Envelope, **EVENT_MODELS}
    out = {f"{name}.schema.json": _render(model.model_json_schema()) for name, model in items.items()}
    out[OPA_INPUT_SCHEMA] = _render(PolicyInput.model_json_schema())
    return out


def _render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
