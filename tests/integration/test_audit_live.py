"""The worker's audit agent keeps a verifiable chain that answers subject access questions."""

from __future__ import annotations

import os
import subprocess
import sys

from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus


def _sgbus(bus: Bus, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SGBUS_HOME": str(bus.settings.home), "SGBUS_POLICIES_DIR": str(bus.settings.policies_dir)}
    return subprocess.run([sys.executable, "-m", "bus", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, input=stdin)


def test_audit_trail_shows_who_received_what_and_the_chain_verifies(bus: Bus) -> None:
    s = Synth(seed=61)
    child = s.child(min_age=5)
    events = [s.domestic_abuse_incident(child, school_urn="900001"), s.child_protection_plan(child)]
    bus.publish(events)
    bus.audits_for({e["event_id"] for e in events}, 5)
    nhs = child["identifiers"]["nhs_number"]

    def trail() -> str | None:
        result = _sgbus(bus, "audit", "trail", "--nhs-number", nhs, "--reason", "audit")
        return result.stdout if result.returncode == 0 and "5 decision(s)" in result.stdout else None

    text = wait_for(trail, 60, what="the child's five decisions in the audit store")
    assert "oakfield-primary" in text and "SHARED under DSA-OE-001" in text
    assert "northshire-nhs-uec" in text and "SHARED under DSA-CPIS-001" in text
    assert "DENIED" in text and "no agreement covers police.domestic_abuse_incident.v1" in text
    assert "policy revision sha256:" in text
    assert nhs not in text.replace(f"--nhs-number {nhs}", "")
    # The number can be kept out of the shell's history and the process list.
    piped = _sgbus(bus, "audit", "trail", "--nhs-number", "-", "--reason", "audit", stdin=f"{nhs}\n")
    assert piped.returncode == 0, piped.stderr
    assert "5 decision(s)" in piped.stdout and "SHARED under DSA-OE-001" in piped.stdout
    verified = _sgbus(bus, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "audit OK" in verified.stdout
