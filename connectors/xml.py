"""Reading partners' XML safely: no entities, no DTD, no network, no huge trees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml import etree

from connectors.base import FileRejected


def parse_xml(path: Path) -> Any:
    """The root element; FileRejected if the file is not XML. A return is data, never
    instructions to the parser: external entities and DTDs are not loaded."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.parse(str(path), parser).getroot()
    except (etree.XMLSyntaxError, OSError):
        raise FileRejected("not XML") from None


def text(node: Any, path: str) -> str | None:
    """The stripped text at `path` below `node`, or None when absent or empty."""
    found = node.find(path)
    return found.text.strip() if found is not None and found.text and found.text.strip() else None
