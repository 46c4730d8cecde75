"""`sgbus demo` on a stack of its own, as a new user runs it: the secure stack, every connector,
the gateway and the partner mailbox, and only private files left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bus.security.files import loose_modes
from tests.integration.conftest import REPO


def test_demo_runs_on_the_secure_stack_and_leaves_only_private_files(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    env = {**os.environ, "SGBUS_HOME": str(home), "SGBUS_POLICIES_DIR": str(REPO / "policies")}
    # A permissive umask in the caller must not matter: sgbus makes its own files private.
    result = subprocess.run([sys.executable, "-m", "bus", "demo"], capture_output=True, text=True, env=env,
                            timeout=400, check=False, preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "audit chain: verified" in result.stdout
    assert "started kafka, opa" not in result.stdout  # progress goes to stderr
    # One inbound file per agency flowed through its connector and was decided like any event.
    for connector in ("encompass", "school-sessions", "nhs-fhir", "cin-census"):
        assert f"connector {connector} (" in result.stderr
        assert f"<- {connector}" in result.stdout, connector
    # One partner published over HTTPS through the gateway, another collected it from its mailbox.
    assert "northshire-police published over HTTPS (mutual TLS)" in result.stdout
    assert "police.domestic_abuse_incident.v1 <- gateway" in result.stdout
    assert "oakfield-primary collected" in result.stdout and "and acknowledged them" in result.stdout
    assert "tracks its event: ingested, shared with 2 partner(s), named: oakfield-primary" in result.stdout
    assert (home / "credentials").is_dir() and (home / "pki" / "ca.key").is_file()
    assert loose_modes(home) == []
    # Its trail and chronology were looked up as a person's are: on record first.
    looked = subprocess.run([sys.executable, "-m", "bus", "audit", "lookups", "--json"], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert looked.returncode == 0, looked.stderr
    rows = [json.loads(line) for line in looked.stdout.splitlines()]
    assert {(r["command"], r["reason"]) for r in rows} == {("audit trail", "demonstration"),
                                                          ("chronology", "demonstration")}
