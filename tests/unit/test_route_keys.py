"""Keys ready before use: the route stage re-reads the keyring for a key it lacks, and an
allowed share whose view still cannot be built is audited as view_failed, not as a delivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bus.policy.data import load_partnership
from bus.pseudonymise.keyring import Keyring, KeyringWatch, save_keyring
from bus.route import Router
from schemas.registry import parse_event_dict
from schemas.synthetic import Synth
from tests.helpers import pseudonymised
from tests.unit.test_security_model import _AllowsEverything

REPO = Path(__file__).parents[2]
PARTNERSHIP = load_partnership(REPO / "policies" / "data")


def _event(keyring: Keyring):  # type: ignore[no-untyped-def]
    s = Synth(seed=77)
    return pseudonymised(parse_event_dict(s.domestic_abuse_incident(s.child(6, 10))), keyring)


def test_a_worker_without_the_sealing_key_audits_view_failed_not_allow() -> None:
    """Regression (issue 13): after `keys rotate`, a worker without the new key audited "allow"
    and then failed to build the view, so the partner never got the event."""
    old = Keyring.generate()
    rotated = old.rotated()
    event = _event(rotated)  # sealed under the new key by an ingest worker that has it
    router = Router(PARTNERSHIP, old, _AllowsEverything(), "sha256:r")  # type: ignore[arg-type]
    plan = asyncio.run(router.route_batch([event]))
    assert not plan.deliveries
    assert plan.audits and {a.decision for a in plan.audits} == {"view_failed"}
    assert all(any("view_failed: KeyringError" in r for r in a.reasons) for a in plan.audits)
    assert {f.recipient for f in plan.failed} == {a.recipient for a in plan.audits}


def test_the_route_stage_re_reads_a_rotated_keyring_file_and_delivers(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    old = Keyring.generate()
    save_keyring(old, path)
    watch = KeyringWatch(path)
    router = Router(PARTNERSHIP, watch(), _AllowsEverything(), "sha256:r",  # type: ignore[arg-type]
                    keyring_source=watch)
    rotated = old.rotated()
    save_keyring(rotated, path)  # `sgbus keys rotate` by another process
    plan = asyncio.run(router.route_batch([_event(rotated)]))
    assert plan.deliveries and not plan.failed
    assert {a.decision for a in plan.audits} == {"allow"}
    assert router.keyring.seal.active == rotated.seal.active
