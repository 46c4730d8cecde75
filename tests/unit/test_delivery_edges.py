"""Delivery connectors and the Encompass reader at their edges: a redirect, a look-alike local
URL, an event id another organisation also uses, a domestic-abuse flag that is not a boolean."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from connectors.base import Context, Converted, Rejection
from connectors.delivery.base import Rejected, SeenStore, _event_id
from connectors.delivery.cli import plain_http_allowed
from connectors.delivery.webhook import WebhookSink
from connectors.inbound import CONNECTORS, connector_settings

REPO = Path(__file__).parents[2]
NOW = datetime.fromisoformat("2026-11-26T06:00:00+00:00")


def test_a_redirect_is_final_not_retried_for_ever() -> None:
    sink = WebhookSink("https://csc.example.org/hook", b"secret", sleep=lambda _s: None)
    sink.client = httpx.Client(
        transport=httpx.MockTransport(
            lambda _request: httpx.Response(301, headers={"Location": "https://elsewhere.example.org/"})
        )
    )
    with pytest.raises(Rejected) as info:
        sink.deliver("5c1f9d3e-1111-4a2b-8c3d-000000000001", b"{}")
    assert info.value.status == 301 and sink.attempts == 1


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://csc.example.org/hook", True),
        ("http://127.0.0.1:8080/hook", True),
        ("http://localhost/hook", True),
        ("http://localhost.attacker.example/hook", False),
        ("http://localhost@attacker.example/hook", False),
        ("http://127.0.0.1.attacker.example/hook", False),
        ("http://csc.example.org/hook", False),
        ("https:///nohost", False),
    ],
)
def test_plain_http_only_to_this_host(url: str, allowed: bool) -> None:
    assert plain_http_allowed(url) is allowed


def _message(event: dict[str, Any], offset: int) -> Any:
    return SimpleNamespace(value=lambda: json.dumps(event).encode(), partition=lambda: 0, offset=lambda: offset)


def test_another_organisations_event_with_the_same_id_is_not_a_duplicate(tmp_path: Path) -> None:
    same = "5c1f9d3e-1111-4a2b-8c3d-000000000001"
    school = _message({"event_id": same, "source": {"agency": "school", "org_id": "900002"}}, 1)
    police = _message({"event_id": same, "source": {"agency": "police", "org_id": "NSP"}}, 2)
    (id1, key1), (id2, key2) = _event_id(school), _event_id(police)
    assert id1 == id2 == same and key1 != key2
    seen = SeenStore(tmp_path / "seen.db")
    seen.add(key1)
    assert seen.seen(key1) and not seen.seen(key2)
    assert _event_id(_message({"event_id": same, "source": {"agency": "school", "org_id": "900002"}}, 9))[1] == key1


@pytest.mark.parametrize("flag", ["true", "Y", 1, None])
def test_a_domestic_abuse_flag_that_is_not_a_boolean_is_rejected_not_dropped(flag: Any, tmp_path: Path) -> None:
    doc = json.loads((REPO / "connectors" / "samples" / "encompass" / "notifications.json").read_text())
    first = doc[0] if isinstance(doc, list) else doc
    attributes = first["data"]["attributes"]
    if flag is None:
        del attributes["domesticAbuse"]
    else:
        attributes["domesticAbuse"] = flag
    path = tmp_path / "n.json"
    path.write_text(json.dumps(first))
    ctx = Context(org_id="NSP", now=NOW, settings=connector_settings("encompass", REPO / "policies" / "data"))
    results = list(CONNECTORS["encompass"]().convert(path, ctx))
    assert not [r for r in results if isinstance(r, Converted)]
    assert [r.field for r in results if isinstance(r, Rejection)] == ["data.attributes.domesticAbuse"]
