"""Code tables of the connectors (source codes -> canonical enums), read from
connectors/mappings/*.yaml so a partnership can read and review them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

MAPPINGS_DIR = Path(__file__).parent / "mappings"


@lru_cache(maxsize=32)
def mapping(name: str) -> dict[str, Any]:
    """The tables of one connector, e.g. mapping("ssda903")["legal_status"]."""
    data = yaml.safe_load((MAPPINGS_DIR / f"{name}.yaml").read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{name}.yaml: expected a mapping of tables")
    return data


def table(name: str, key: str) -> dict[str, str]:
    """One code table with string keys and values (YAML may read codes like 01 as numbers)."""
    raw = mapping(name)[key]
    return {str(k): str(v) for k, v in raw.items()}
