"""`sgbus policy simulate`: what a proposed policy set would change, event by event, before it ships."""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bus import toolchain
from bus.exceptions import PolicyDataError, SgbusError
from bus.policy.bundle import bundle_extra
from bus.policy.data import Partnership, load_partnership
from bus.policy.decision import Decision
from bus.policy.revision import policy_revision, rego_files
from bus.policy.today import uk_today
from bus.pseudonymise.keyring import Keyring
from bus.route import requests_for
from schemas.envelope import Envelope, Urgency


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


def evaluate(policies_dir: Path, events: list[Envelope], today: str,
             partnership: Partnership | None = None) -> tuple[str, dict[tuple[str, str], Decision]]:
    """(revision, {(event_id, recipient): decision}) from `opa eval` on one policy set
    (`partnership`: its data, when the caller has read it already)."""
    partnership = partnership or load_partnership(policies_dir / "data")
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
    #: partners', subscriptions' and the emergency section's changes, which no decision shows
    #: (a partner's linkage domain decides whose tokens match; its area, what it is sent)
    settings: list[str] = field(default_factory=list)
    #: later dates an agreement starts or ends on, with the changes that differ from today's
    later: list[tuple[str, list[EventChange]]] = field(default_factory=list)
    #: declared-urgent copies of the events tried too (their ids are new), so the emergency
    #: section's changes show
    urgent_copies: int = 0
    #: later days an agreement starts or ends on beyond the MAX_LATER_DATES tried
    later_untried: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "current_revision": self.current_revision, "proposed_revision": self.proposed_revision,
            "events": self.events, "urgent_copies": self.urgent_copies, "later_untried": self.later_untried,
            "changes": [c.__dict__ for c in self.changes if not c.empty],
            "settings": self.settings,
            "later": [{"from": day, "changes": [c.__dict__ for c in changes]} for day, changes in self.later],
            "concern": {"newly_crossing": [{"child": k, "rule": r} for k, r in self.concern_newly],
                        "no_longer_crossing": [{"child": k, "rule": r} for k, r in self.concern_no_longer]},
        }

    def render(self) -> list[str]:
        lines = [f"current {self.current_revision} -> proposed {self.proposed_revision}; {self.events} event(s) "
                 f"and {self.urgent_copies} declared-urgent copy(ies)"]
        changed = [c for c in self.changes if not c.empty]
        lines += _render_changes(changed)
        added = sum(len(c.added) for c in changed)
        removed = sum(len(c.removed) for c in changed)
        modified = sum(len(c.changed) for c in changed)
        lines.append(f"{len(changed)} event(s) affected: {added} recipient(s) added, {removed} removed, "
                     f"{modified} share(s) changed")
        for day, later in self.later:
            lines.append(f"from {day} (an agreement starts or ends), besides the above:")
            lines += ["  " + line for line in _render_changes(later)]
        if self.later_untried:
            lines.append(f"{self.later_untried} later day(s) an agreement starts or ends on not tried (only the "
                         f"nearest {MAX_LATER_DATES}): run again with --today set later to see them")
        lines += [f"setting: {note}" for note in self.settings]
        lines += [f"concern: child {k} would newly cross {r}" for k, r in self.concern_newly]
        lines += [f"concern: child {k} would no longer cross {r}" for k, r in self.concern_no_longer]
        lines.append(f"multi-agency concern: {len(self.concern_newly)} child/rule pair(s) newly crossing, "
                     f"{len(self.concern_no_longer)} no longer")
        return lines


def _render_changes(changed: list[EventChange]) -> list[str]:
    lines = []
    for c in changed:
        lines.append(f"event {c.event_id} {c.event_type}")
        lines += [f"  + {r}: recipient added" for r in c.added]
        lines += [f"  - {r}: recipient removed" for r in c.removed]
        for recipient, notes in c.changed.items():
            lines += [f"  ~ {recipient}: {n}" for n in notes]
    return lines


#: later dates tried at most (the nearest first)
MAX_LATER_DATES = 12


def _load(label: str, policies_dir: Path) -> Partnership:
    try:
        return load_partnership(policies_dir / "data")
    except PolicyDataError as exc:
        raise PolicyDataError(f"{label} policies: {exc}") from None


def _later_dates(today: str, *partnerships: Partnership) -> tuple[list[str], int]:
    """(the nearest MAX_LATER_DATES days after `today` on which an agreement of either set starts
    or stops being in force, how many later ones are left untried)."""
    days = set()
    for partnership in partnerships:
        for a in partnership.agreements:
            days.add(a.valid_from.isoformat())
            if a.valid_to is not None:
                days.add((a.valid_to + timedelta(days=1)).isoformat())
    later = sorted(d for d in days if d > today)
    return later[:MAX_LATER_DATES], max(0, len(later) - MAX_LATER_DATES)


def _urgent_copies(events: list[Envelope], *partnerships: Partnership) -> list[Envelope]:
    """One declared-urgent copy of an event of each type and source, per declarer role either
    set names: synthetic events carry no urgency, so without them no change to the emergency
    section would show."""
    roles = sorted({r for p in partnerships if p.emergency is not None for r in p.emergency.declarer_roles})
    firsts: dict[tuple[str, str, str], Envelope] = {}
    for event in events:
        firsts.setdefault((event.event_type, event.source.agency.value, event.source.org_id), event)
    return [event.model_copy(update={
        "event_id": uuid.uuid5(event.event_id, f"simulated-urgent/{role}"),
        "urgency": Urgency(urgent_risk_of_significant_harm=True, justification="simulated urgent risk of harm",
                           declared_by_role=role, declaration="simulated")})
        for event in firsts.values() for role in roles]


def _settings_changes(before: Partnership, after: Partnership) -> list[str]:
    notes = []
    old, new = {p.id: p for p in before.partners}, {p.id: p for p in after.partners}
    notes += [f"partner {pid} added ({new[pid].agency.value} {new[pid].org_id}, area {new[pid].area}, "
              f"linkage domain {new[pid].linkage_domain})" for pid in sorted(set(new) - set(old))]
    notes += [f"partner {pid} removed" for pid in sorted(set(old) - set(new))]
    for pid in sorted(set(old) & set(new)):
        a, b = old[pid].model_dump(mode="json"), new[pid].model_dump(mode="json")
        notes += [f"partner {pid}: {key} {a.get(key)} -> {b.get(key)}" for key in sorted(set(a) | set(b))
                  if a.get(key) != b.get(key)]
    subs_a = {(s.partner, t, s.purpose) for s in before.subscriptions for t in s.event_types}
    subs_b = {(s.partner, t, s.purpose) for s in after.subscriptions for t in s.event_types}
    notes += [f"subscription added: {p} {t} for {u}" for p, t, u in sorted(subs_b - subs_a)]
    notes += [f"subscription removed: {p} {t} for {u}" for p, t, u in sorted(subs_a - subs_b)]
    em_a = before.emergency.model_dump(mode="json") if before.emergency else {}
    em_b = after.emergency.model_dump(mode="json") if after.emergency else {}
    notes += [f"emergency {key}: {em_a.get(key)} -> {em_b.get(key)}" for key in sorted(set(em_a) | set(em_b))
              if em_a.get(key) != em_b.get(key)]
    return notes


def _diff(events: list[Envelope], current: dict[tuple[str, str], Decision],
          proposed: dict[tuple[str, str], Decision]) -> list[EventChange]:
    changes = []
    for event in events:
        eid = str(event.event_id)
        label = event.event_type + (f" (declared urgent by {event.urgency.declared_by_role})" if event.urgency else "")
        change = EventChange(eid, label)
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
    return changes


def simulate(current_dir: Path, proposed_dir: Path, events: list[Envelope], today: str | None = None,
             keyring: Keyring | None = None) -> Simulation:
    """Per event (and per declared-urgent copy), what the proposed set changes today and on each
    later day an agreement starts or ends; what it changes in partners, subscriptions and the
    emergency section; and which children would newly cross (or no longer cross) a
    multi-agency concern rule, named by the MASH's token when `keyring` is given."""
    today = today or uk_today().isoformat()
    before, after = _load("current", current_dir), _load("proposed", proposed_dir)
    urgent = _urgent_copies(events, before, after)
    tried = [*events, *urgent]
    cur_rev, current = evaluate(current_dir, tried, today, before)
    new_rev, proposed = evaluate(proposed_dir, tried, today, after)
    changes = _diff(tried, current, proposed)
    now = {json.dumps(c.__dict__, sort_keys=True) for c in changes if not c.empty}
    later = []
    days, untried = _later_dates(today, before, after)
    for day in days:
        then = _diff(tried, evaluate(current_dir, tried, day, before)[1], evaluate(proposed_dir, tried, day, after)[1])
        differ = [c for c in then if not c.empty and json.dumps(c.__dict__, sort_keys=True) not in now]
        if differ:
            later.append((day, differ))
    from bus.concern.simulate import concern_changes

    at = int(datetime.now(UTC).timestamp())
    newly, no_longer = concern_changes(current_dir, proposed_dir, events, keyring, at, (current, proposed))
    return Simulation(cur_rev, new_rev, len(events), changes, newly, no_longer,
                      settings=_settings_changes(before, after), later=later, urgent_copies=len(urgent),
                      later_untried=untried)
