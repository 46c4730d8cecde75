"""What a proposed concern threshold would change: which children (by the MASH's token) would newly
cross, or no longer cross, a rule, for a set of events (as `sgbus policy simulate` shows)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bus import toolchain
from bus.concern.picture import Picture, Report
from bus.exceptions import SgbusError
from bus.policy.bundle import bundle_extra
from bus.policy.data import load_partnership
from bus.policy.revision import policy_revision, rego_files
from bus.pseudonymise.engine import KEY_KINDS
from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.token import token
from schemas.envelope import Agency, Envelope
from schemas.registry import base_type


def pictures(events: list[Envelope], domain: str, keyring: Keyring | None) -> dict[str, Picture]:
    """Each child's picture from `events`, keyed by its token in `domain` (or `child-N` without a keyring)."""
    out: dict[str, Picture] = {}
    labels: dict[tuple[str, str], str] = {}
    for e in events:
        if e.source.agency == Agency.BUS:
            continue
        ids = e.subject.identifiers.present()
        kind = next((k for k in KEY_KINDS if k in ids), None)
        if kind is None:
            continue
        if keyring is not None:
            key = token(keyring, domain, kind, ids[kind])
        else:
            key = labels.setdefault((kind, ids[kind]), f"child-{len(labels) + 1}")
        out.setdefault(key, Picture()).add(Report(str(e.event_id), e.source.agency.value, base_type(e.event_type),
                                                  int(e.occurred_at.timestamp())))
    return out


def crossed(policies_dir: Path, children: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(child key, rule) pairs the policy set at `policies_dir` says are crossed (`opa eval`)."""
    partnership = load_partnership(policies_dir / "data")
    if partnership.concern is None or not children:
        return set()
    data = partnership.as_opa_data()
    extra = bundle_extra(None)
    revision = policy_revision(policies_dir, data, extra)
    with tempfile.TemporaryDirectory(prefix="sgbus-sim-concern-") as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps({"sgbus": {"partnership": data, "meta": {"revision": revision}}}))
        input_file = Path(tmp) / "input.json"
        input_file.write_text(json.dumps({"children": children}))
        args = [str(toolchain.ensure_opa().path), "eval", "--format", "json", "-i", str(input_file),
                "-d", str(data_file)]
        for rego in rego_files(policies_dir):
            args += ["-d", str(rego)]
        proc = subprocess.run([*args, "data.sgbus.concern.decisions"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SgbusError(f"opa eval failed on {policies_dir}: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        values = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    except (KeyError, IndexError, json.JSONDecodeError):
        return set()  # no concern policy in that set
    return {(str(d["key"]), str(d["rule"])) for d in values if d.get("crossed") is True}


def concern_changes(current_dir: Path, proposed_dir: Path, events: list[Envelope], keyring: Keyring | None,
                    now: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(newly crossing, no longer crossing): (child token, rule) pairs, sorted."""
    partnership = load_partnership(proposed_dir / "data")
    concern = partnership.concern or load_partnership(current_dir / "data").concern
    if concern is None:
        return [], []
    children = [p.opa_child(key, now) for key, p in pictures(events, concern.linkage_domain, keyring).items()]
    before, after = crossed(current_dir, children), crossed(proposed_dir, children)
    return sorted(after - before), sorted(before - after)
