package sgbus.concern_test

import rego.v1

import data.sgbus.concern

day := 86400

now := 100 * day

rules := {
	"linkage_domain": "mash",
	"rules": [
		{"id": "three-agencies-90d", "title": "t", "window_days": 90, "min_agencies": 3, "require": {}},
		{
			"id": "domestic-abuse-and-attendance-30d", "title": "t", "window_days": 30, "min_agencies": null,
			"require": {"police.domestic_abuse_incident": 2, "school.attendance_concern": 1},
		},
	],
	"material_change": {"new_agency": true, "new_event_type": true, "more_events": 3},
}

ev(agency, event_type, days_ago) := {"agency": agency, "event_type": event_type, "at": now - (days_ago * day)}

police := ev("police", "police.domestic_abuse_incident", 10)

school := ev("school", "school.attendance_concern", 5)

nhs := ev("nhs", "nhs.unscheduled_care_attendance", 1)

decide(events, raised) := {d.rule: d |
	some d in concern.decisions with input as {"children": [{"key": "psn:k:abc", "now": now, "events": events, "raised": raised}]}
		with data.sgbus.partnership.concern as rules
}

test_three_agencies_within_the_window_cross_and_raise if {
	d := decide([police, school, nhs], {})
	d["three-agencies-90d"].crossed
	d["three-agencies-90d"].raise
	d["three-agencies-90d"].key == "psn:k:abc"
}

test_two_agencies_do_not_cross if {
	d := decide([police, school], {})
	not d["three-agencies-90d"].crossed
	not d["three-agencies-90d"].raise
}

test_a_history_spread_outside_the_window_does_not_cross if {
	d := decide([ev("police", "police.domestic_abuse_incident", 200), ev("school", "school.attendance_concern", 150), nhs], {})
	not d["three-agencies-90d"].crossed
}

test_required_event_counts_within_thirty_days if {
	d := decide([police, ev("police", "police.domestic_abuse_incident", 20), school], {})
	d["domestic-abuse-and-attendance-30d"].crossed
	e := decide([police, ev("police", "police.domestic_abuse_incident", 40), school], {})
	not e["domestic-abuse-and-attendance-30d"].crossed
}

test_an_unchanged_picture_is_not_raised_twice if {
	previous := {"three-agencies-90d": {"agencies": ["nhs", "police", "school"], "events": 3, "event_types": [
		"nhs.unscheduled_care_attendance", "police.domestic_abuse_incident", "school.attendance_concern",
	]}}
	d := decide([police, school, nhs], previous)
	d["three-agencies-90d"].crossed
	not d["three-agencies-90d"].raise
}

test_a_new_event_type_raises_again if {
	previous := {"three-agencies-90d": {"agencies": ["nhs", "police", "school"], "events": 3, "event_types": [
		"nhs.unscheduled_care_attendance", "police.domestic_abuse_incident", "school.attendance_concern",
	]}}
	d := decide([police, school, nhs, ev("police", "police.missing_episode", 1)], previous)
	d["three-agencies-90d"].raise
}

test_three_more_events_raise_again_but_two_do_not if {
	previous := {"three-agencies-90d": {"agencies": ["nhs", "police", "school"], "events": 3, "event_types": [
		"nhs.unscheduled_care_attendance", "police.domestic_abuse_incident", "school.attendance_concern",
	]}}
	two := decide([police, school, nhs, police, school], previous)
	not two["three-agencies-90d"].raise
	three := decide([police, school, nhs, police, school, nhs], previous)
	three["three-agencies-90d"].raise
}

test_a_new_agency_raises_again if {
	previous := {"three-agencies-90d": {"agencies": ["nhs", "police", "school"], "events": 3, "event_types": [
		"nhs.unscheduled_care_attendance", "police.domestic_abuse_incident", "school.attendance_concern",
	]}}
	d := decide([police, school, nhs, ev("social_care", "nhs.unscheduled_care_attendance", 1)], previous)
	d["three-agencies-90d"].raise
}

test_events_in_the_future_do_not_count if {
	d := decide([police, school, ev("nhs", "nhs.safeguarding_concern", -5)], {})
	not d["three-agencies-90d"].crossed
}

test_every_decision_gives_a_reason if {
	d := decide([police], {})
	d["three-agencies-90d"].reasons == ["three-agencies-90d: not crossed"]
	e := decide([police, school, nhs], {})
	e["three-agencies-90d"].reasons == ["three-agencies-90d: 3 agencies, 3 events in 90 days"]
}
