"""Decision cache: a decision reused for a request that policy cannot tell apart from one it
answered under the same revision on the same day.

Why not key on the whole policy input: every event carries attributes no agreement reads (its
police reference, its timestamps), so a whole-input key never repeats (0 % hits on the
benchmark's synthetic traffic). The key is what `policies/sgbus/share` reads of a request:
the event fields in POLICY_READS, the attributes the pinned partnership's agreement
conditions name, the recipient, the purpose, and `input.today`. The event id is only echoed
back, so a hit is the cached decision re-addressed to the request's event.

Two guards keep the key honest: tests/unit/test_decision_cache.py scans the Rego for every
event field and input it reads (a policy change that reads more fails there until POLICY_READS
names it), and the router asks OPA afresh for one cached request (in a batch, or sent ahead of
it; at most about every 0.05-0.1 s while checks vouch for later batches: Router, CHECK_VOUCHES_S)
and drops the cache for good if the answers differ.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from bus.policy.data import Partnership
from bus.policy.decision import Decision

#: The event fields share.rego reads (besides `attributes`, keyed by the conditions' names, and
#: `event_id`, only echoed). `occurred_at` is not read; a policy that reads it must add it here.
POLICY_READS = ("event_type", "agency", "org_id", "urgent", "justification_recorded", "override_role")

Key = tuple[Any, ...]


def condition_attributes(partnership: Partnership) -> tuple[str, ...]:
    """Every attribute an agreement condition compares (`attribute` or `recipient_org_matches`)."""
    # Both names of every condition, even though the partnership refuses a condition with both:
    # a name left out of the key is a decision reused for a request policy tells apart.
    names = {n for a in partnership.agreements for c in a.conditions for n in (c.attribute, c.recipient_org_matches)}
    return tuple(sorted(n for n in names if n))


class DecisionCache:
    """Bounded (least recently used out first); emptied whenever the pinned revision changes."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, Decision] = OrderedDict()
        self._revision: str | None = None
        self._attributes: tuple[str, ...] = ()
        self.disabled = False

    def pin(self, revision: str, partnership: Partnership) -> None:
        """Use the cache under `revision` (with its partnership's conditions): a new one empties it."""
        if revision != self._revision:
            self._entries.clear()
            self._revision = revision
            self._attributes = condition_attributes(partnership)

    def key(self, request: dict[str, Any], today: str, event_part: tuple[Any, ...] | None = None) -> Key:
        """`event_part`: the request's event's `event_part`, when the caller has it already (an
        event's requests to each of its recipients share it)."""
        if event_part is None:
            event_part = self.event_part(request["event"])
        return (today, request["recipient"], request["purpose"], *event_part)

    def event_part(self, event: dict[str, Any]) -> tuple[Any, ...]:
        """What of a request's event (its policy view) the policy reads."""
        attributes = event["attributes"]
        # Rego's object.get(attributes, name, null): a missing attribute and a null one are alike.
        return (*(event.get(f) for f in POLICY_READS),
                *(json.dumps(attributes.get(a), sort_keys=True) for a in self._attributes))

    def get(self, key: Key, event_id: str) -> Decision | None:
        if self.disabled:
            return None
        cached = self._entries.get(key)
        if cached is None:
            return None
        self._entries.move_to_end(key)
        return cached.model_copy(update={"event_id": event_id})

    def put(self, key: Key, decision: Decision) -> None:
        if self.disabled or decision.revision != self._revision:
            return  # a decision under another revision is never kept for this one
        self._entries[key] = decision
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def disable(self) -> None:
        self.disabled = True
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def same_decision(a: Decision, b: Decision) -> bool:
    """Equal apart from the event each is addressed to."""
    return a.model_dump(exclude={"event_id"}) == b.model_dump(exclude={"event_id"})
