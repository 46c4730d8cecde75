"""Deterministic synthetic events (no real people) for the demo, tests and benchmarks."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.identifiers import nhs_number_check_digit, upn_check_letter

GIVEN = ["Ava", "Noah", "Isla", "Leo", "Maya", "Oscar", "Ruby", "Finn", "Zara", "Theo", "Lily", "Arlo"]
FAMILY = ["Testwood", "Synthby", "Mockford", "Fablehurst", "Notreal", "Sampleton", "Dummer", "Fakenham"]
POSTCODES = ["NS1 4AB", "NS2 7QT", "NS3 1ZD", "NS4 9HX", "SS1 2PL"]


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


class Synth:
    """Builds events of each type around synthetic children; same seed, same events."""

    def __init__(self, seed: int = 1, now: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def child(self) -> dict[str, Any]:
        age_days = self.rng.randrange(5 * 365, 16 * 365)
        return {
            "identifiers": {"nhs_number": synthetic_nhs_number(self.rng), "upn": synthetic_upn(self.rng)},
            "given_name": self.rng.choice(GIVEN),
            "family_name": self.rng.choice(FAMILY),
            "date_of_birth": (self.now.date() - timedelta(days=age_days)).isoformat(),
            "postcode": self.rng.choice(POSTCODES),
        }

    def _envelope(self, event_type: str, agency: str, org_id: str, subject: dict[str, Any],
                  payload: dict[str, Any], hours_ago: float = 2.0) -> dict[str, Any]:
        occurred = self.now - timedelta(hours=hours_ago)
        return {
            "event_id": self._uuid(),
            "event_type": event_type,
            "source": {"agency": agency, "org_id": org_id},
            "occurred_at": occurred.isoformat(),
            "recorded_at": (occurred + timedelta(minutes=40)).isoformat(),
            "subject": subject,
            "classification": "OFFICIAL-SENSITIVE",
            "payload": payload,
        }

    def domestic_abuse_incident(self, subject: dict[str, Any], school_urn: str = "900001",
                                child_present: bool = True) -> dict[str, Any]:
        at = self.now - timedelta(hours=3)
        return self._envelope("police.domestic_abuse_incident.v1", "police", "NSP", subject, {
            "police_reference": f"NSP-{self.rng.randrange(10**6, 10**7)}",
            "incident_at": at.isoformat(),
            "location_type": "home",
            "child_present": child_present,
            "child_location": "same_room" if child_present else "not_present",
            "child_spoken_to": True,
            "child_voice": "Said they hid upstairs and felt scared.",
            "circumstances": "Verbal argument escalated; officers attended; adult arrested.",
            "school_urn": school_urn,
            "risk_grade": self.rng.choice(["standard", "medium", "high"]),
        })

    def child_protection_plan(self, subject: dict[str, Any], la: str = "N01") -> dict[str, Any]:
        return self._envelope("social_care.child_protection_plan.v1", "social_care", la, subject, {
            "action": "start",
            "plan_start": (self.now.date() - timedelta(days=1)).isoformat(),
            "category": self.rng.choice(["neglect", "emotional_abuse", "physical_abuse"]),
            "local_authority_code": la,
            "team_name": "Northshire Child Protection Team East",
            "team_contact": "01632 960000",
        })

    def unscheduled_care_attendance(self, subject: dict[str, Any], la: str = "N01") -> dict[str, Any]:
        return self._envelope("nhs.unscheduled_care_attendance.v1", "nhs", "RNX", subject, {
            "care_setting_ods": "RNX01",
            "care_setting_type": "emergency_department",
            "arrived_at": (self.now - timedelta(hours=1)).isoformat(),
            "attendance_category": self.rng.choice(["injury", "illness", "poisoning"]),
            "discharge_destination": "home",
            "responsible_la_code": la,
        }, hours_ago=1.0)

    def attendance_concern(self, subject: dict[str, Any], school_urn: str = "900001") -> dict[str, Any]:
        possible = 120
        attended = self.rng.randrange(60, 100)
        end = self.now.date() - timedelta(days=1)
        return self._envelope("school.attendance_concern.v1", "school", school_urn, subject, {
            "school_urn": school_urn,
            "la_code": "N01",
            "period_start": (end - timedelta(days=60)).isoformat(),
            "period_end": end.isoformat(),
            "sessions_possible": possible,
            "sessions_attended": attended,
            "attendance_pct": round(100 * attended / possible, 1),
            "consecutive_absences": self.rng.randrange(0, 10),
        }, hours_ago=5.0)

    def demo_set(self) -> list[dict[str, Any]]:
        """Operation Encompass and CP-IS both ways, plus a school attendance concern."""
        a, b, c = self.child(), self.child(), self.child()
        return [
            self.domestic_abuse_incident(a, school_urn="900001"),
            self.child_protection_plan(b),
            self.unscheduled_care_attendance(b),
            self.attendance_concern(c, school_urn="900002"),
        ]


def age_on(dob: date, day: date) -> int:
    return day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))
