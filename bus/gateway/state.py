"""Where a running local gateway says where it listens ($SGBUS_HOME/gateway/gateway.json)."""

from __future__ import annotations

import json
from pathlib import Path


def state_path(home: Path) -> Path:
    return home / "gateway" / "gateway.json"


def local_url(home: Path) -> str | None:
    try:
        return str(json.loads(state_path(home).read_text())["url"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
