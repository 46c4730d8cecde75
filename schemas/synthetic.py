"""Deterministic synthetic events (no real people) for the demo, tests and benchmarks.

NHS numbers are drawn from the 999 range, which is never issued to real patients; UPNs use
LA code 999; names, schools, places and phone numbers are invented or from ranges reserved
for drama (01632 960xxx). The same seed and anchor time give the same events.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.identifiers import nhs_number_check_digit, upn_check_letter

GIVEN = ["Ava", "Noah", "Isla", "Leo", "Maya", "Oscar", "Ruby", "Finn", "Zara", "Theo", "Lily", "Arlo",
         "Esme", "Kai", "Nia", "Ezra", "Ivy", "Remi", "Aria", "Jude"]
FAMILY = ["Testwood", "Synthby", "Mockford", "Fablehurst", "Notreal", "Sampleton", "Dummer", "Fakenham",
          "Placeholt", "Exampleby", "Fictionley", "Inventor"]
POSTCODES = ["NS1 4AB", "NS2 7QT", "NS3 1ZD", "NS4 9HX", "NS10 2BB", "SS1 2PL", "SS4 6RE"]
SCHOOLS = ["900001", "900002"]
LAS = ["N01", "N01", "N01", "S01"]  # most children live in Northshire
CARE_SETTINGS = [("RNX01", "emergency_department"), ("RNX02", "urgent_treatment_centre"),
                 ("RNX03", "minor_injuries_unit")]
VOICES = [
    "Said they hid upstairs and felt scared.",
    "Told officers they wanted to stay with their nan tonight.",
    "Did not want to talk; was holding their younger sibling.",
    "Said this happens when dad has been drinking.",
]
CIRCUMSTANCES = [
    "Verbal argument escalated; officers attended; adult arrested.",
    "Neighbour called police after hearing shouting and breaking glass.",
    "Adult victim disclosed previous incidents; DASH completed.",
    "Ex-partner attended address in breach of a non-molestation order.",
]
SUMMARIES = [
    "Child presented withdrawn and hungry on three days this week.",
    "Unexplained bruising to upper arm noticed during PE.",
    "Child disclosed an older contact is giving them money and a phone.",
    "Parent appeared intoxicated at collection; child said home is chaotic.",
    "Concerns about online contact with an unknown adult.",
]


def synthetic_nhs_number(rng: random.Random) -> str:
    """A valid-checksum number in the 999 range, which the NHS never issues to real patients."""
    while True:
        nine = "999" + "".join(str(rng.randrange(10)) for _ in range(6))
        check = nhs_number_check_digit(nine)
        if check is not None:
            return nine + str(check)


def synthetic_upn(rng: random.Random, la: str = "999") -> str:
    body = la + "".join(str(rng.randrange(10)) for _ in range(9))
    return upn_check_letter(body) + body


def default_anchor() -> datetime:
    """Midnight UTC today: output is stable for a seed all day, and never in the future."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class Synth:
    """Builds events of each type around synthetic children; same seed + anchor, same events."""

    def __init__(self, seed: int = 1, now: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)
        self.builders: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "police.domestic_abuse_incident.v1": self.domestic_abuse_incident,
            "police.domestic_abuse_incident.v2": self.domestic_abuse_incident_v2,
            "police.missing_episode.v1": self.missing_episode,
            "police.exploitation_concern.v1": self.exploitation_concern,
            "police.child_arrested.v1": self.child_arrested,
            "nhs.unscheduled_care_attendance.v1": self.unscheduled_care_attendance,
            "nhs.safeguarding_concern.v1": self.safeguarding_concern,
            "nhs.prebirth_concern.v1": self.prebirth_concern,
            "nhs.camhs_referral_status.v1": self.camhs_referral_status,
            "school.attendance_concern.v1": self.attendance_concern,
            "school.suspension_or_exclusion.v1": self.suspension_or_exclusion,
            "school.dsl_concern.v1": self.dsl_concern,
            "school.elective_home_education.v1": self.elective_home_education,
            "school.child_missing_education.v1": self.child_missing_education,
            "social_care.child_protection_plan.v1": self.child_protection_plan,
            "social_care.looked_after_status.v1": self.looked_after_status,
            "social_care.referral_outcome.v1": self.referral_outcome,
            "social_care.strategy_discussion_request.v1": self.strategy_discussion_request,
            "social_care.missing_from_care.v1": self.missing_from_care,
            "bus.multi_agency_concern.v1": self.multi_agency_concern,
        }

    # -- building blocks ------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _ago(self, hours_min: float, hours_max: float) -> datetime:
        return self.now - timedelta(seconds=self.rng.uniform(hours_min * 3600, hours_max * 3600))

    def child(self, min_age: int = 1, max_age: int = 17) -> dict[str, Any]:
        age_days = self.rng.randrange(min_age * 365 + 30, max_age * 365 + 300)
        ids: dict[str, str] = {"nhs_number": synthetic_nhs_number(self.rng)}
        if age_days > 4 * 365:
            ids["upn"] = synthetic_upn(self.rng)
        if self.rng.random() < 0.5:
            ids["la_child_id"] = f"N01-{self.rng.randrange(10**5, 10**6)}"
        return {
            "identifiers": ids,
            "given_name": self.rng.choice(GIVEN),
            "family_name": self.rng.choice(FAMILY),
            "date_of_birth": (self.now.date() - timedelta(days=age_days)).isoformat(),
            "postcode": self.rng.choice(POSTCODES),
        }

    def unborn(self) -> dict[str, Any]:
        return {
            "identifiers": {},
            "family_name": self.rng.choice(FAMILY),
            "expected_delivery_date": (self.now.date() + timedelta(days=self.rng.randrange(20, 200))).isoformat(),
            "postcode": self.rng.choice(POSTCODES),
        }

    def _envelope(self, event_type: str, agency: str, org_id: str, subject: dict[str, Any],
                  payload: dict[str, Any], occurred: datetime | None = None) -> dict[str, Any]:
        occurred = occurred or self._ago(1, 6)
        return {
            "event_id": self._uuid(),
            "event_type": event_type,
            "source": {"agency": agency, "org_id": org_id},
            "occurred_at": occurred.isoformat(),
            "recorded_at": min(self.now, occurred + timedelta(minutes=self.rng.randrange(5, 60))).isoformat(),
            "subject": subject,
            "classification": "OFFICIAL-SENSITIVE",
            "payload": payload,
        }

    def _police_ref(self) -> str:
        return f"NSP-{self.rng.randrange(10**6, 10**7)}"

    # -- police ---------------------------------------------------------------------------------
    def domestic_abuse_incident(self, subject: dict[str, Any], school_urn: str = "900001",
                                child_present: bool = True) -> dict[str, Any]:
        at = self._ago(2, 10)
        return self._envelope("police.domestic_abuse_incident.v1", "police", "NSP", subject, {
            "police_reference": self._police_ref(),
            "incident_at": at.isoformat(),
            "location_type": self.rng.choice(["home", "home", "other_residence"]),
            "child_present": child_present,
            "child_location": self.rng.choice(["same_room", "elsewhere_in_property"]) if child_present
            else "not_present",
            "child_spoken_to": child_present and self.rng.random() < 0.6,
            "child_voice": self.rng.choice(VOICES) if child_present else None,
            "circumstances": self.rng.choice(CIRCUMSTANCES),
            "school_urn": school_urn,
            "risk_grade": self.rng.choice(["standard", "medium", "high"]),
        }, occurred=at + timedelta(minutes=20))

    def domestic_abuse_incident_v2(self, subject: dict[str, Any]) -> dict[str, Any]:
        at = self._ago(2, 10)
        return self._envelope("police.domestic_abuse_incident.v2", "police", "NSP", subject, {
            "police_reference": self._police_ref(),
            "incident_at": at.isoformat(),
            "location_type": "home",
            "child_exposure": self.rng.choice(["witnessed", "heard", "present_not_aware", "not_present"]),
            "child_spoken_to": self.rng.random() < 0.5,
            "child_voice": None,
            "circumstances": self.rng.choice(CIRCUMSTANCES),
            "school_urn": self.rng.choice(SCHOOLS),
            "risk_grade": self.rng.choice(["standard", "medium", "high"]),
            "notify_school_by": (self.now + timedelta(hours=12)).isoformat(),
        }, occurred=at + timedelta(minutes=20))

    def missing_episode(self, subject: dict[str, Any]) -> dict[str, Any]:
        reported = self._ago(6, 48)
        status = self.rng.choice(["missing", "found", "returned"])
        found = reported + timedelta(hours=self.rng.uniform(1, 5)) if status != "missing" else None
        return self._envelope("police.missing_episode.v1", "police", "NSP", subject, {
            "police_reference": self._police_ref(),
            "reported_missing_at": reported.isoformat(),
            "status": status,
            "found_at": found.isoformat() if found else None,
            "risk_level": self.rng.choice(["low", "medium", "high"]),
            "episodes_last_12_months": self.rng.randrange(1, 12),
            "from_care_placement": self.rng.random() < 0.3,
            "found_location_type": self.rng.choice(["home", "friend_or_relative", "another_area"]) if found else None,
            "return_home_interview_required": status != "missing",
            "circumstances": "Left placement after an argument; phone switched off.",
        }, occurred=found or reported)

    def exploitation_concern(self, subject: dict[str, Any]) -> dict[str, Any]:
        return self._envelope("police.exploitation_concern.v1", "police", "NSP", subject, {
            "police_reference": self._police_ref(),
            "identified_at": self._ago(6, 24).isoformat(),
            "exploitation_types": self.rng.sample(["criminal_exploitation", "county_lines", "sexual_exploitation",
                                                   "online_exploitation"], k=self.rng.randrange(1, 3)),
            "risk_level": self.rng.choice(["medium", "high"]),
            "nrm_referral_made": self.rng.random() < 0.4,
            "locations_of_concern": self.rng.sample(["NS1", "NS3", "NS10", "SS4"], k=2),
            "associated_adults_count": self.rng.randrange(0, 4),
            "summary": self.rng.choice(SUMMARIES),
        })

    def child_arrested(self, subject: dict[str, Any]) -> dict[str, Any]:
        at = self._ago(7, 30)  # the outcome comes 6 hours later, still in the past
        return self._envelope("police.child_arrested.v1", "police", "NSP", subject, {
            "police_reference": self._police_ref(),
            "arrested_at": at.isoformat(),
            "offence_category": self.rng.choice(["theft", "drug_offences", "possession_of_weapons", "robbery"]),
            "custody_suite": "NSP-CS01",
            "appropriate_adult_requested": True,
            "outcome": "released_under_investigation",
            "outcome_at": (at + timedelta(hours=6)).isoformat(),
        }, occurred=at + timedelta(hours=6))

    # -- nhs ------------------------------------------------------------------------------------
    def unscheduled_care_attendance(self, subject: dict[str, Any], la: str = "N01") -> dict[str, Any]:
        ods, kind = self.rng.choice(CARE_SETTINGS)
        arrived = self._ago(1, 8)
        return self._envelope("nhs.unscheduled_care_attendance.v1", "nhs", "RNX", subject, {
            "care_setting_ods": ods,
            "care_setting_type": kind,
            "arrived_at": arrived.isoformat(),
            "attendance_category": self.rng.choice(["injury", "illness", "poisoning", "self_harm"]),
            "discharge_destination": self.rng.choice(["home", "admitted", None]),
            "responsible_la_code": la,
        }, occurred=arrived)

    def safeguarding_concern(self, subject: dict[str, Any]) -> dict[str, Any]:
        return self._envelope("nhs.safeguarding_concern.v1", "nhs", "RNX", subject, {
            "raised_at": self._ago(1, 12).isoformat(),
            "raised_by_role": self.rng.choice(["nurse", "doctor", "health_visitor", "school_nurse"]),
            "care_setting_ods": "RNX01",
            "categories": self.rng.sample(["neglect", "physical_abuse", "emotional_abuse", "self_harm"], k=1),
            "referred_to_childrens_services": self.rng.random() < 0.7,
            "responsible_la_code": self.rng.choice(LAS),
            "summary": self.rng.choice(SUMMARIES),
        })

    def prebirth_concern(self, subject: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._envelope("nhs.prebirth_concern.v1", "nhs", "RNX", subject or self.unborn(), {
            "booking_trust_ods": "RNX",
            "gestation_weeks": self.rng.randrange(12, 38),
            "factors": self.rng.sample(["substance_misuse", "domestic_abuse", "parental_mental_health",
                                        "previous_child_removed"], k=2),
            "midwife_team": "Northshire Community Midwives South",
            "responsible_la_code": "N01",
            "summary": "Late booking; mother disclosed previous children removed.",
        })

    def camhs_referral_status(self, subject: dict[str, Any]) -> dict[str, Any]:
        received = self._ago(24 * 20, 24 * 60)
        return self._envelope("nhs.camhs_referral_status.v1", "nhs", "RNX", subject, {
            "service_ods": "RNXCM",
            "referral_received_at": received.isoformat(),
            "status": self.rng.choice(["accepted", "waiting", "in_treatment", "declined"]),
            "status_at": self._ago(1, 12).isoformat(),
            "urgency": self.rng.choice(["routine", "urgent"]),
            "referrer_agency": self.rng.choice(["school", "nhs", "social_care"]),
        })

    # -- school ---------------------------------------------------------------------------------
    def attendance_concern(self, subject: dict[str, Any], school_urn: str = "900001") -> dict[str, Any]:
        possible = self.rng.choice([60, 120, 180])
        attended = self.rng.randrange(possible // 2, int(possible * 0.9))
        end = self.now.date() - timedelta(days=1)
        return self._envelope("school.attendance_concern.v1", "school", school_urn, subject, {
            "school_urn": school_urn,
            "la_code": "N01",
            "period_start": (end - timedelta(days=possible // 2 + 30)).isoformat(),
            "period_end": end.isoformat(),
            "sessions_possible": possible,
            "sessions_attended": attended,
            "attendance_pct": round(100 * attended / possible, 1),
            "consecutive_absences": self.rng.randrange(0, 10),
        })

    def suspension_or_exclusion(self, subject: dict[str, Any]) -> dict[str, Any]:
        urn = self.rng.choice(SCHOOLS)
        kind = self.rng.choice(["suspension", "suspension", "permanent_exclusion"])
        return self._envelope("school.suspension_or_exclusion.v1", "school", urn, subject, {
            "school_urn": urn,
            "la_code": "N01",
            "kind": kind,
            "start_date": self.now.date().isoformat(),
            "sessions": self.rng.randrange(1, 10) if kind == "suspension" else None,
            "reason": self.rng.choice(["persistent_disruptive_behaviour", "physical_assault_against_pupil",
                                       "drug_and_alcohol_related"]),
            "has_send": self.rng.random() < 0.4,
            "has_social_worker": self.rng.random() < 0.2,
        })

    def dsl_concern(self, subject: dict[str, Any]) -> dict[str, Any]:
        urn = self.rng.choice(SCHOOLS)
        return self._envelope("school.dsl_concern.v1", "school", urn, subject, {
            "school_urn": urn,
            "la_code": "N01",
            "raised_at": self._ago(1, 8).isoformat(),
            "categories": self.rng.sample(["neglect", "online_safety", "child_on_child_abuse", "self_harm"], k=1),
            "referred_to_mash": self.rng.random() < 0.5,
            "summary": self.rng.choice(SUMMARIES),
        })

    def elective_home_education(self, subject: dict[str, Any]) -> dict[str, Any]:
        urn = self.rng.choice(SCHOOLS)
        notified = self.now.date() - timedelta(days=self.rng.randrange(2, 20))
        return self._envelope("school.elective_home_education.v1", "school", urn, subject, {
            "school_urn": urn,
            "la_code": "N01",
            "notified_on": notified.isoformat(),
            "off_roll_on": (notified + timedelta(days=1)).isoformat(),
            "reason_given": self.rng.choice(["dissatisfaction_with_school", "health", "not_given", "bullying"]),
            "known_to_social_care": self.rng.random() < 0.25,
        })

    def child_missing_education(self, subject: dict[str, Any]) -> dict[str, Any]:
        urn = self.rng.choice(SCHOOLS)
        left = self.now.date() - timedelta(days=self.rng.randrange(1, 15))
        return self._envelope("school.child_missing_education.v1", "school", urn, subject, {
            "school_urn": urn,
            "la_code": "N01",
            "left_roll_on": left.isoformat(),
            "last_attended_on": (left - timedelta(days=self.rng.randrange(1, 20))).isoformat(),
        })

    # -- social care ----------------------------------------------------------------------------
    def child_protection_plan(self, subject: dict[str, Any], la: str = "N01") -> dict[str, Any]:
        return self._envelope("social_care.child_protection_plan.v1", "social_care", la, subject, {
            "action": "start",
            "plan_start": (self.now.date() - timedelta(days=1)).isoformat(),
            "category": self.rng.choice(["neglect", "emotional_abuse", "physical_abuse"]),
            "local_authority_code": la,
            "team_name": "Northshire Child Protection Team East",
            "team_contact": "01632 960000",
        })

    def looked_after_status(self, subject: dict[str, Any]) -> dict[str, Any]:
        return self._envelope("social_care.looked_after_status.v1", "social_care", "N01", subject, {
            "action": "start",
            "legal_status": self.rng.choice(["C1", "C2", "V2"]),
            "period_start": (self.now.date() - timedelta(days=2)).isoformat(),
            "placing_authority_code": "N01",
            "placement_type": self.rng.choice(["foster_care", "kinship_care", "childrens_home"]),
            "placement_la_code": self.rng.choice(["N01", "S01"]),
        })

    def missing_from_care(self, subject: dict[str, Any]) -> dict[str, Any]:
        started = self.now.date() - timedelta(days=self.rng.randrange(1, 10))
        ended = started + timedelta(days=self.rng.randrange(0, 3)) if self.rng.random() < 0.7 else None
        return self._envelope("social_care.missing_from_care.v1", "social_care", "N01", subject, {
            "kind": self.rng.choice(["missing", "away"]),
            "started_on": started.isoformat(),
            "ended_on": ended.isoformat() if ended and ended <= self.now.date() else None,
            "placing_authority_code": "N01",
        })

    def referral_outcome(self, subject: dict[str, Any]) -> dict[str, Any]:
        received = self._ago(24, 72)
        return self._envelope("social_care.referral_outcome.v1", "social_care", "N01", subject, {
            "referral_received_at": received.isoformat(),
            "referral_source": self.rng.choice(["police", "health", "school"]),
            "outcome": self.rng.choice(["early_help", "child_and_family_assessment", "no_further_action"]),
            "outcome_at": self._ago(1, 20).isoformat(),
            "local_authority_code": "N01",
            "feedback_to_referrer": "Thank you; an assessment has been opened.",
        })

    def strategy_discussion_request(self, subject: dict[str, Any]) -> dict[str, Any]:
        requested = self._ago(1, 4)
        return self._envelope("social_care.strategy_discussion_request.v1", "social_care", "N01", subject, {
            "requested_at": requested.isoformat(),
            "respond_by": (requested + timedelta(hours=24)).isoformat(),
            "local_authority_code": "N01",
            "requesting_team": "Northshire MASH",
            "reason": self.rng.choice(["reasonable_cause_to_suspect_significant_harm", "exploitation"]),
            "invited_agencies": ["police", "nhs", "school"],
            "urgent_risk_of_significant_harm": self.rng.random() < 0.2,
        }, occurred=requested)

    # -- the bus ----------------------------------------------------------------------------------
    def multi_agency_concern(self, subject: dict[str, Any]) -> dict[str, Any]:
        """A concern as the bus raises it (for tests and the catalogue; the bus builds its own)."""
        first, second, third = sorted(self._ago(24, 24 * 80) for _ in range(3))
        reports = [
            {"event_type": "police.domestic_abuse_incident", "agency": "police", "count": 1,
             "first_at": first.isoformat(), "last_at": first.isoformat()},
            {"event_type": "school.attendance_concern", "agency": "school", "count": 1,
             "first_at": second.isoformat(), "last_at": second.isoformat()},
            {"event_type": "nhs.unscheduled_care_attendance", "agency": "nhs", "count": 1,
             "first_at": third.isoformat(), "last_at": third.isoformat()},
        ]
        return self._envelope("bus.multi_agency_concern.v1", "bus", "SGBUS", subject, {
            "rule": "three-agencies-90d", "window_days": 90, "agencies": ["nhs", "police", "school"],
            "reports": reports, "events_in_window": 3, "first_at": first.isoformat(), "last_at": third.isoformat(),
            "raised": 1,
        }, occurred=third)

    # -- sets and streams -----------------------------------------------------------------------
    def event(self, event_type: str, subject: dict[str, Any] | None = None) -> dict[str, Any]:
        build = self.builders[event_type]
        if event_type == "nhs.prebirth_concern.v1":
            return build(subject or self.unborn())
        if event_type == "social_care.looked_after_status.v1" and subject is None:
            subject = self.child(max_age=24 if self.rng.random() < 0.2 else 17)
        return build(subject or self.child())

    def stream(self, count: int, event_type: str | None = None) -> Iterator[dict[str, Any]]:
        """`count` varied events (of one type, or of every type); children recur across events."""
        children = [self.child() for _ in range(max(1, count // 4))]
        # What partners publish (the bus raises its own concerns; a stream never fakes them).
        types = sorted(t for t in self.builders if not t.startswith("bus."))
        for _ in range(count):
            kind = event_type or self.rng.choice(types)
            subject = None if kind in ("nhs.prebirth_concern.v1", "social_care.looked_after_status.v1") \
                else self.rng.choice(children)
            yield self.event(kind, subject)

    def demo_set(self) -> list[dict[str, Any]]:
        """Operation Encompass and CP-IS both ways, plus a school attendance concern."""
        a, b, c = self.child(min_age=5), self.child(), self.child(min_age=5)
        return [
            self.domestic_abuse_incident(a, school_urn="900001"),
            self.child_protection_plan(b),
            self.unscheduled_care_attendance(b),
            self.attendance_concern(c, school_urn="900002"),
        ]
