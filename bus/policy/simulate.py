"""`sgbus policy simulate`: what a proposed policy set would change, event by event, before it ships."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import toolchain
from bus.exceptions import PolicyDataError, SgbusError
from bus.policy.bundle import bundle_extra
from bus.policy.data import Partnership, load_partnership
from bus.policy.decision import Decision
from bus.policy.revision import policy_revision, rego_files
from bus.pseudonymise.keyring import Keyring
from bus.route import requests_for
from schemas.envelope import Envelope


def opa_eval(policies_dir: Path, partnership: Partnership, input_doc: dict[str, Any], query: str) -> tuple[str, Any]:
    """(revision, value of `query`) from `opa eval` on one policy set and its partnership data, as
    OPA would hold them in the signed bundle (value None when the query is undefined)."""
    data = partnership.as_opa_data()
    extra = bundle_extra(None)
    revision = policy_revision(policies_dir, data, extra)
    with tempfile.TemporaryDirectory(prefix="sgbus-sim-") as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps({"sgbus": {"partnership": data, "meta": {"revision": revision},
                                                   "catalogue": extra["catalogue"]}}))
        input_file = Path(tmp) / "input.json"
        input_file.write_text(json.dumps(input_doc))
        args = [str(toolchain.ensure_opa().path), "eval", "--format", "json", "-i", str(input_file),
                "-d", str(data_file)]
        for rego in rego_files(policies_dir):
            args += ["-d", str(rego)]
        proc = subprocess.run([*args, query], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SgbusError(f"opa eval failed on {policies_dir}: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        return revision, json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    except (KeyError, IndexError, json.JSONDecodeError):
        return revision, None


def evaluate(policies_dir: Path, events: list[Envelope], today: str) -> tuple[str, dict[tuple[str, str], Decision]]:
    """(revision, {(event_id, recipient): decision}) from `opa eval` on one policy set."""
    partnership = load_partnership(policies_dir / "data")
    pairs = requests_for(partnership, events)
    if not pairs:
        return policy_revision(policies_dir, partnership.as_opa_data(), bundle_extra(None)), {}
    revision, values = opa_eval(policies_dir, partnership, {"today": today, "requests": [r for _, r in pairs]},
                                "data.sgbus.share.decisions")
    if values is None:
        raise SgbusError(f"policies in {policies_dir} returned no decisions")
    decisions = [Decision.model_validate(v) for v in values]
    return revision, {(d.event_id, d.recipient): d for d in decisions}


@dataclass
class EventChange:
    event_id: str
    event_type: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _diff_allowed(before: Decision, after: Decision) -> list[str]:
    notes = []
    if before.agreement != after.agreement:
        notes.append(f"agreement {before.agreement} -> {after.agreement}")
    gone, new = sorted(set(before.fields) - set(after.fields)), sorted(set(after.fields) - set(before.fields))
    if gone:
        notes.append("fields narrowed: -" + ", -".join(gone))
    if new:
        notes.append("fields widened: +" + ", +".join(new))
    for name in sorted(set(before.free_text) | set(after.free_text)):
        a, b = before.free_text.get(name, "drop"), after.free_text.get(name, "drop")
        if a != b:
            notes.append(f"free text {name}: {a} -> {b}")
    for kind in sorted(set(before.identifiers) | set(after.identifiers)):
        a, b = before.identifiers.get(kind, "drop"), after.identifiers.get(kind, "drop")
        if a != b:
            notes.append(f"identifier {kind}: {a} -> {b}")
    for name in ("dob", "postcode", "name"):
        a, b = getattr(before.demographics, name), getattr(after.demographics, name)
        if a != b:
            notes.append(f"demographic {name}: {a} -> {b}")
    if before.retention_days != after.retention_days:
        notes.append(f"retention {before.retention_days} -> {after.retention_days} days")
    if before.override != after.override:
        notes.append(f"override {before.override} -> {after.override}")
    return notes


@dataclass
class Simulation:
    current_revision: str
    proposed_revision: str
    events: int
    changes: list[EventChange]
    #: (child's token in the concern's linkage domain, rule) that would newly cross / no longer cross
    concern_newly: list[tuple[str, str]] = field(default_factory=list)
    concern_no_longer: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "current_revision": self.current_revision, "proposed_revision": self.proposed_revision,
            "events": self.events,
            "changes": [c.__dict__ for c in self.changes if not c.empty],
            "concern": {"newly_crossing": [{"child": k, "rule": r} for k, r in self.concern_newly],
                        "no_longer_crossing": [{"child": k, "rule": r} for k, r in self.concern_no_longer]},
        }

    def render(self) -> list[str]:
        lines = [f"current {self.current_revision} -> proposed {self.proposed_revision}; {self.events} event(s)"]
        changed = [c for c in self.changes if not c.empty]
        for c in changed:
            lines.append(f"event {c.event_id} {c.event_type}")
            lines += [f"  + {r}: recipient added" for r in c.added]
            lines += [f"  - {r}: recipient removed" for r in c.removed]
            for recipient, notes in c.changed.items():
                lines += [f"  ~ {recipient}: {n}" for n in notes]
        added = sum(len(c.added) for c in changed)
        removed = sum(len(c.removed) for c in changed)
        modified = sum(len(c.changed) for c in changed)
        lines.append(f"{len(changed)} event(s) affected: {added} recipient(s) added, {removed} removed, "
                     f"{modified} share(s) changed")
        lines += [f"concern: child {k} would newly cross {r}" for k, r in self.concern_newly]
        lines += [f"concern: child {k} would no longer cross {r}" for k, r in self.concern_no_longer]
        lines.append(f"multi-agency concern: {len(self.concern_newly)} child/rule pair(s) newly crossing, "
                     f"{len(self.concern_no_longer)} no longer")
        return lines


def simulate(current_dir: Path, proposed_dir: Path, events: list[Envelope], today: str | None = None,
             keyring: Keyring | None = None) -> Simulation:
    """Per event, what the proposed set changes; and which children would newly cross (or no longer
    cross) a multi-agency concern rule, named by the MASH's token when `keyring` is given."""
    today = today or datetime.now(UTC).date().isoformat()
    try:
        cur_rev, current = evaluate(current_dir, events, today)
    except PolicyDataError as exc:
        raise PolicyDataError(f"current policies: {exc}") from None
    try:
        new_rev, proposed = evaluate(proposed_dir, events, today)
    except PolicyDataError as exc:
        raise PolicyDataError(f"proposed policies: {exc}") from None
    changes = []
    for event in events:
        eid = str(event.event_id)
        change = EventChange(eid, event.event_type)
        recipients = sorted({r for (e, r) in current if e == eid} | {r for (e, r) in proposed if e == eid})
        for r in recipients:
            before, after = current.get((eid, r)), proposed.get((eid, r))
            was = before is not None and before.allow
            now = after is not None and after.allow
            if now and not was:
                change.added.append(r)
            elif was and not now:
                change.removed.append(r)
            elif was and now and before is not None and after is not None:
                notes = _diff_allowed(before, after)
                if notes:
                    change.changed[r] = notes
        changes.append(change)
    from bus.concern.simulate import concern_changes

    at = int(datetime.now(UTC).timestamp())
    newly, no_longer = concern_changes(current_dir, proposed_dir, events, keyring, at, (current, proposed))
    return Simulation(cur_rev, new_rev, len(events), changes, newly, no_longer)
