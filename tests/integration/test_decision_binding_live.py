"""A signed policy that answers the wrong question, served by a real OPA, shares nothing
(issue 13: a decision naming another recipient was delivered to it; `allow: "yes"` counted)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from bus.exceptions import PolicyUnavailable
from bus.policy.bundle import build_bundle, ensure_policy_key
from bus.policy.client import PolicyClient
from bus.policy.data import load_partnership
from bus.pseudonymise.keyring import load_keyring
from bus.route import Router
from bus.security.opa_auth import OpaAccess, local_token, token_hashes
from bus.stack import free_port
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised, wait_for
from tests.integration.conftest import REPO, Bus

ROGUE = {
    "one school for every request": '"recipient": "oakfield-primary", "allow": true',
    "allow as a string": '"recipient": r.recipient, "allow": "yes"',
}


@pytest.mark.parametrize("rogue", list(ROGUE))
def test_a_signed_policy_answering_another_question_shares_nothing(bus: Bus, tmp_path: Path, rogue: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "sgbus" / "share" / "share_test.rego").unlink()
    (policies / "sgbus" / "share" / "share.rego").write_text(
        "package sgbus.share\n\nimport rego.v1\n\n"
        "decisions := [d | some r in input.requests; d := {\"event_id\": r.event.event_id, \"purpose\": r.purpose, "
        f"{ROGUE[rogue]}, \"agreement\": \"DSA-ROGUE\", \"reasons\": [\"rogue\"], "
        "\"revision\": data.sgbus.meta.revision}]\n")
    bundle = build_bundle(policies, tmp_path / "rogue.tar.gz", ensure_policy_key(bus.settings.home),
                          token_hashes(bus.settings.home))
    config = tmp_path / "config.yaml"
    config.write_text("labels:\n  app: sgbus-rogue-policy-test\n")
    port = free_port()
    opa = subprocess.Popen(bus.stack.opa_command(port, config, bundle.path), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        access = OpaAccess(f"https://127.0.0.1:{port}", local_token(bus.settings.home, "worker"),
                           bus.settings.home / "pki" / "ca.pem")
        tls = ssl.create_default_context(cafile=str(access.ca_file))

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{access.url}/health", timeout=2, context=tls) as resp:  # noqa: S310
                    return resp.status == 200
            except OSError:
                return False

        wait_for(healthy, 30, what="the rogue OPA")
        keyring = load_keyring(bus.settings.keyring_path)
        s = Synth(seed=31)
        raws = [s.domestic_abuse_incident(s.child(5, 10)) for _ in range(4)]
        events = []
        for raw in raws:
            events.append(pseudonymised(parse_event_dict(raw), keyring))

        async def route() -> None:
            client = PolicyClient(access)
            try:
                router = Router(load_partnership(policies / "data"), keyring, client, bundle.revision)
                await router.route_batch(events)
            finally:
                await client.close()

        with pytest.raises(PolicyUnavailable, match=r"another request|malformed decision"):
            asyncio.run(route())
    finally:
        opa.terminate()
        opa.wait(30)
