"""What a proposed concern threshold would change: which children (by the MASH's token) would newly
cross, or no longer cross, a rule, for a set of events (as `sgbus policy simulate` shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bus.concern.entitlement import concern_recipients, may_count, own_sources
from bus.concern.picture import Picture, Report
from bus.policy.data import Partnership, load_partnership
from bus.policy.decision import Decision
from bus.pseudonymise.engine import KEY_KINDS
from bus.pseudonymise.keyring import Keyring
from bus.pseudonymise.operators.token import token
from schemas.envelope import Agency, Envelope
from schemas.registry import base_type


def countable_events(events: list[Envelope], partnership: Partnership,
                     decisions: dict[tuple[str, str], Decision]) -> list[Envelope]:
    """The events the concern stage would count under this policy set: each concern recipient's
    own, or shared with every one of them (`decisions`: that set's, per (event id, recipient))."""
    recipients = concern_recipients(partnership)
    own = own_sources(partnership, recipients)
    counted = []
    for e in events:
        eid = str(e.event_id)
        allowed = {r for r in recipients if (d := decisions.get((eid, r))) is not None and d.allow}
        if may_count((e.source.agency.value, e.source.org_id), allowed, recipients, own):
            counted.append(e)
    return counted


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
    from bus.policy.simulate import opa_eval

    partnership = load_partnership(policies_dir / "data")
    if partnership.concern is None or not children:
        return set()
    _revision, values = opa_eval(policies_dir, partnership, {"children": children}, "data.sgbus.concern.decisions")
    return {(str(d["key"]), str(d["rule"])) for d in values or [] if d.get("crossed") is True}


def concern_changes(current_dir: Path, proposed_dir: Path, events: list[Envelope], keyring: Keyring | None,
                    now: int, decisions: tuple[dict[tuple[str, str], Decision], dict[tuple[str, str], Decision]],
                    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(newly crossing, no longer crossing): (child token, rule) pairs, sorted. `decisions`: each
    set's share decisions for `events` (current, proposed), which say what each set lets count."""
    current, proposed = load_partnership(current_dir / "data"), load_partnership(proposed_dir / "data")
    concern = proposed.concern or current.concern
    if concern is None:
        return [], []

    def children(partnership: Partnership, decided: dict[tuple[str, str], Decision]) -> list[dict[str, Any]]:
        counted = countable_events(events, partnership, decided)
        return [p.opa_child(key, now) for key, p in pictures(counted, concern.linkage_domain, keyring).items()]

    before = crossed(current_dir, children(current, decisions[0]))
    after = crossed(proposed_dir, children(proposed, decisions[1]))
    return sorted(after - before), sorted(before - after)
