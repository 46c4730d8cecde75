"""Throughput of the pseudonymisation hot path on one core: ingest (validate + tokenise + seal +
redact) and building one recipient view (unseal + operators)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from bus.policy.data import Partner
from bus.policy.decision import Decision
from bus.pseudonymise.engine import pseudonymise_at_ingest, recipient_view
from bus.pseudonymise.keyring import Keyring
from bus.records import Provenance
from schemas.registry import parse_event
from schemas.synthetic import Synth


@dataclass(frozen=True)
class Throughput:
    stage: str
    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def bench_pseudonymise(count: int = 5000, seed: int = 1) -> list[Throughput]:
    keyring = Keyring.generate()
    synth = Synth(seed=seed)
    raws = [json.dumps(synth.domestic_abuse_incident(synth.child(min_age=5))).encode() for _ in range(count)]
    start = time.perf_counter()
    unsigned = Provenance(kid="bench", content_sha256="0" * 64, signature="bench")  # signatures: not measured here
    events = [pseudonymise_at_ingest(parse_event(raw), keyring, ingest_id=uuid.uuid4(), provenance=unsigned)
              for raw in raws]
    ingest = Throughput("ingest: validate + tokenise + seal + redact", count, time.perf_counter() - start)
    decision = Decision(event_id="x", recipient="northshire-csc", allow=True, agreement="DSA-OE-002",
                        purpose="child-protection", reasons=["bench"], revision="bench",
                        fields=["incident_at", "risk_grade", "circumstances"],
                        identifiers={"nhs_number": "token", "upn": "reveal"})
    partner = Partner(id="northshire-csc", name="csc", agency="social_care", org_id="N01", area="northshire",
                      linkage_domain="mash")
    start = time.perf_counter()
    for event in events:
        recipient_view(event, decision, partner, keyring).model_dump_json()
    view = Throughput("deliver: unseal + token/reveal/generalise + serialise", count, time.perf_counter() - start)
    return [ingest, view]
