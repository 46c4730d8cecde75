"""Issue 14 on the real stack: each agreement's free-text mode decides who gets the original
narrative (sealed at ingest), the redacted copy, or nothing; the audit never holds it in clear."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bus.topics import AUDIT, EVENTS, deliver_topic
from schemas.synthetic import Synth
from tests.helpers import wait_for
from tests.integration.conftest import Bus


def _delivered(bus: Bus, partner: str, event_id: str) -> dict[str, Any]:
    return wait_for(lambda: next((r for r in bus.records(deliver_topic(partner)) if r["event_id"] == event_id), None),
                    60, what=f"the delivery to {partner}")


def test_the_mash_gets_the_original_a_school_none_and_youth_justice_the_redacted_copy(bus: Bus) -> None:
    s = Synth(seed=141)
    child = s.child(min_age=8)
    name = f"{child['given_name']} {child['family_name']}"
    dai = s.domestic_abuse_incident(child, school_urn="900001")
    narrative = f"{name} hid upstairs while her stepfather shouted; neighbour called 999 at 22:10."
    dai["payload"]["circumstances"] = narrative
    exploitation = s.exploitation_concern(child)
    summary = f"{child['given_name']} seen getting into cars near the station after school."
    exploitation["payload"]["summary"] = summary
    bus.publish([dai, exploitation])

    mash = _delivered(bus, "northshire-csc", dai["event_id"])
    assert mash["payload"]["circumstances"] == narrative  # DSA-OE-002: free_text circumstances: reveal
    school = _delivered(bus, "oakfield-primary", dai["event_id"])
    assert "circumstances" not in school["payload"] and "child_voice" not in school["payload"]  # Encompass: none
    yjs = _delivered(bus, "northshire-yjs", exploitation["event_id"])
    assert yjs["payload"]["summary"].startswith("[PERSON] seen getting into cars")  # DSA-EXP-001: redact
    assert child["given_name"] not in yjs["payload"]["summary"]

    ids = {dai["event_id"], exploitation["event_id"]}
    audits = {(a["event_id"], a["recipient"]): a for a in bus.audits_for(ids, 6)}
    assert audits[(dai["event_id"], "northshire-csc")]["free_text_modes"] == {"circumstances": "reveal",
                                                                              "child_voice": "reveal"}
    assert audits[(dai["event_id"], "oakfield-primary")]["free_text_modes"] == {}
    assert audits[(exploitation["event_id"], "northshire-yjs")]["free_text_modes"] == {"summary": "redact"}
    # The narrative is in no audit message and not on sg.events in clear (sealed there).
    for topic in (AUDIT, EVENTS):
        assert not any(narrative.encode() in v or summary.encode() in v for v in bus.raw_values(topic)), topic


def test_no_override_justification_is_stored_in_the_audit_in_clear(bus: Bus) -> None:
    bus.ensure_declarers()
    signers = bus.signers
    s = Synth(seed=142)
    justification = "Threats to kill made in front of the child; knife recovered at the scene."
    event = {**s.domestic_abuse_incident(s.child(min_age=5)),
             "urgency": {"urgent_risk_of_significant_harm": True, "declared_by_role": "duty inspector",
                         "justification": justification}}
    event = signers.declare(event, "duty inspector")
    bus.publish([event])
    csc = next(a for a in bus.audits_for({event["event_id"]}, 4) if a["recipient"] == "northshire-csc")
    assert csc["override"] is True and set(csc["override_justification"]) == {"kid", "nonce", "ct"}

    def stored() -> str | None:
        db = sqlite3.connect(bus.settings.audit_db_path)
        try:
            rows = [r[0] for r in db.execute("SELECT body FROM audit WHERE event_id = ?", (event["event_id"],))]
        finally:
            db.close()
        return "\n".join(rows) if len(rows) >= 4 else None

    text = wait_for(stored, 60, what="the override's audit records in the store")
    assert justification not in text and "knife" not in text
    assert json.loads(text.splitlines()[0])["event_id"] == event["event_id"]
