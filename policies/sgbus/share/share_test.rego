package sgbus.share_test

import data.sgbus.share

_partnership := {
	"partners": [
		{"id": "police", "agency": "police", "org_id": "NSP", "area": "north"},
		{"id": "school-a", "agency": "school", "org_id": "900001", "area": "north"},
		{"id": "school-b", "agency": "school", "org_id": "900002", "area": "north"},
		{"id": "csc", "agency": "social_care", "org_id": "N01", "area": "north"},
		{"id": "other-csc", "agency": "social_care", "org_id": "S01", "area": "south"},
		{"id": "yjs", "agency": "social_care", "org_id": "N01YJ", "area": "north"},
	],
	"emergency": {
		"id": "EMERGENCY-X",
		"recipient_agencies": ["police", "social_care"],
		"recipient_purposes": ["child-protection"],
		"same_area_only": true,
		"lawful_basis": ["vital interests"],
		"identifiers": {"nhs_number": "reveal"},
		"demographics": {"dob": "full", "postcode": "full", "name": "full"},
		"retention_days": 3000,
		"declarer_roles": ["duty inspector"],
	},
	"agreements": [
		{
			"id": "DSA-OE",
			"providers": ["police"],
			"recipients": ["school-a", "school-b"],
			"event_types": ["police.dai.v1"],
			"purposes": ["encompass"],
			"lawful_basis": ["s.11"],
			"fields": ["incident_at"],
			"identifiers": {"upn": "reveal"},
			"demographics": {"dob": "full", "postcode": "drop", "name": "full"},
			"conditions": [{"recipient_org_matches": "school_urn", "attribute": null, "equals": null}],
			"areas": null,
			"valid_from": "2025-01-01",
			"valid_to": "2026-12-31",
			"retention_days": 365,
		},
		{
			"id": "DSA-CSC",
			"providers": ["police"],
			"recipients": ["csc"],
			"event_types": ["police.dai.v1"],
			"purposes": ["child-protection"],
			"lawful_basis": ["s.47"],
			"fields": ["incident_at"],
			"free_text": {"circumstances": "reveal", "not_a_free_text_field": "reveal"},
			"identifiers": {"nhs_number": "token"},
			"demographics": {"dob": "full", "postcode": "full", "name": "full"},
			"conditions": [{"recipient_org_matches": null, "attribute": "child_present", "equals": true}],
			"areas": null,
			"valid_from": "2025-01-01",
			"valid_to": null,
			"retention_days": 2555,
		},
		{
			"id": "DSA-YJ",
			"providers": ["police"],
			"recipients": ["yjs", "other-csc"],
			"event_types": ["police.exp.v1"],
			"purposes": ["youth-justice"],
			"lawful_basis": ["CDA s.115"],
			"fields": ["risk_level"],
			"identifiers": {},
			"demographics": {"dob": "full", "postcode": "drop", "name": "full"},
			"conditions": [],
			"areas": ["north"],
			"valid_from": "2025-01-01",
			"valid_to": null,
			"retention_days": 100,
		},
	],
}

_event := {
	"event_id": "e1",
	"event_type": "police.dai.v1",
	"agency": "police",
	"org_id": "NSP",
	"attributes": {"school_urn": "900001", "child_present": true},
}

_exp_event := object.union(_event, {"event_type": "police.exp.v1", "event_id": "e2"})

_urgent_event := object.union(_event, {"urgent": true, "justification_recorded": true, "override_role": "duty inspector"})

_catalogue := {"police.dai.v1": {"fields": ["child_present", "circumstances", "incident_at", "school_urn"], "free_text": ["circumstances"]}}

_decide(recipient, purpose, event, today) := d if {
	ds := share.decisions with input as {"today": today, "requests": [{"event": event, "recipient": recipient, "purpose": purpose}]}
		with data.sgbus.partnership as _partnership
		with data.sgbus.meta.revision as "rev-test"
		with data.sgbus.catalogue as _catalogue
	d := ds[0]
}

_cases := [
	{"name": "child's school is allowed", "recipient": "school-a", "purpose": "encompass", "event": _event, "today": "2026-01-10", "allow": true, "reason": "DSA-OE allows police.dai.v1 to school-a for encompass"},
	{"name": "another school is denied", "recipient": "school-b", "purpose": "encompass", "event": _event, "today": "2026-01-10", "allow": false, "reason": "DSA-OE: condition not met: recipient is the organisation named in school_urn"},
	{"name": "expired agreement denies", "recipient": "school-a", "purpose": "encompass", "event": _event, "today": "2027-01-10", "allow": false, "reason": "DSA-OE: expired on 2026-12-31"},
	{"name": "agreement not yet in force denies", "recipient": "school-a", "purpose": "encompass", "event": _event, "today": "2024-12-31", "allow": false, "reason": "DSA-OE: not in force until 2025-01-01"},
	{"name": "wrong purpose denies", "recipient": "school-a", "purpose": "marketing", "event": _event, "today": "2026-01-10", "allow": false, "reason": "DSA-OE: purpose marketing is not covered"},
	{"name": "no agreement denies", "recipient": "other-csc", "purpose": "child-protection", "event": _event, "today": "2026-01-10", "allow": false, "reason": "no agreement covers police.dai.v1 from police/NSP to other-csc"},
	{"name": "unknown recipient denies", "recipient": "nobody", "purpose": "child-protection", "event": _event, "today": "2026-01-10", "allow": false, "reason": "recipient is not a partner of this partnership"},
	{"name": "attribute condition allows", "recipient": "csc", "purpose": "child-protection", "event": _event, "today": "2026-01-10", "allow": true, "reason": "DSA-CSC allows police.dai.v1 to csc for child-protection"},
	{"name": "attribute condition denies", "recipient": "csc", "purpose": "child-protection", "event": object.union(_event, {"attributes": {"child_present": false}}), "today": "2026-01-10", "allow": false, "reason": "DSA-CSC: condition not met: child_present must be true"},
	{"name": "recipient in a covered area is allowed", "recipient": "yjs", "purpose": "youth-justice", "event": _exp_event, "today": "2026-01-10", "allow": true, "reason": "DSA-YJ allows police.exp.v1 to yjs for youth-justice"},
	{"name": "recipient outside the agreement's areas is denied", "recipient": "other-csc", "purpose": "youth-justice", "event": _exp_event, "today": "2026-01-10", "allow": false, "reason": "DSA-YJ: recipient area south is not covered"},
	{"name": "unknown provider denies", "recipient": "csc", "purpose": "child-protection", "event": object.union(_event, {"org_id": "XXX"}), "today": "2026-01-10", "allow": false, "reason": "no agreement covers police.dai.v1 from police/XXX to csc"},
]

test_decisions_table if {
	every c in _cases {
		d := _decide(c.recipient, c.purpose, c.event, c.today)
		d.allow == c.allow
		c.reason in d.reasons
		d.revision == "rev-test"
	}
}

test_allow_carries_obligations if {
	d := _decide("csc", "child-protection", _event, "2026-01-10")
	d.agreement == "DSA-CSC"
	d.fields == ["incident_at"]
	d.free_text == {"circumstances": "reveal"} # only the event type's own free-text fields
	d.identifiers == {"nhs_number": "token"}
	d.lawful_basis == ["s.47"]
	d.retention_days == 2555
}

test_deny_shares_nothing if {
	d := _decide("school-b", "encompass", _event, "2026-01-10")
	d.fields == []
	d.free_text == {}
	d.identifiers == {}
	d.demographics == {"dob": "drop", "postcode": "drop", "name": "drop"}
	d.agreement == null
}

test_batch_keeps_request_order if {
	reqs := [
		{"event": _event, "recipient": "school-b", "purpose": "encompass"},
		{"event": _event, "recipient": "school-a", "purpose": "encompass"},
	]
	ds := share.decisions with input as {"today": "2026-01-10", "requests": reqs}
		with data.sgbus.partnership as _partnership
	[d.allow | some d in ds] == [false, true]
	[d.recipient | some d in ds] == ["school-b", "school-a"]
}

test_without_data_everything_is_denied if {
	ds := share.decisions with input as {"today": "2026-01-10", "requests": [{"event": _event, "recipient": "school-a", "purpose": "encompass"}]}
		with data.sgbus.partnership as {"partners": [], "agreements": []}
	ds[0].allow == false
	ds[0].revision == "unversioned"
}

test_override_widens_an_allowed_share_and_is_marked if {
	d := _decide("csc", "child-protection", _urgent_event, "2026-01-10")
	d.allow == true
	d.override == true
	d.agreement == "DSA-CSC"
	d.fields == ["child_present", "incident_at", "school_urn"]
	d.free_text == {"circumstances": "reveal"} # the agreement's own choice stands
	d.identifiers == {"nhs_number": "reveal"}
	d.retention_days == 3000
	d.lawful_basis == ["s.47", "vital interests"]
	"EMERGENCY-X: urgent risk of significant harm declared by duty inspector with a recorded justification" in d.reasons
}

test_override_allows_police_or_social_care_in_the_same_area_when_otherwise_denied if {
	d := _decide("yjs", "child-protection", _urgent_event, "2026-01-10")
	d.allow == true
	d.override == true
	d.agreement == "EMERGENCY-X"
	"without the override: no agreement covers police.dai.v1 from police/NSP to yjs" in d.reasons
}

test_override_never_reaches_schools_or_other_areas if {
	school := _decide("school-b", "encompass", _urgent_event, "2026-01-10")
	school.allow == false
	school.override == false
	other := _decide("other-csc", "child-protection", _urgent_event, "2026-01-10")
	other.allow == false
	other.override == false
}

test_override_needs_a_recorded_justification if {
	event := object.union(_event, {"urgent": true, "justification_recorded": false})
	d := _decide("yjs", "child-protection", event, "2026-01-10")
	d.allow == false
	d.override == false
}

test_override_can_span_areas_when_configured if {
	emergency := object.union(_partnership.emergency, {"same_area_only": false})
	ds := share.decisions with input as {"today": "2026-01-10", "requests": [{"event": _urgent_event, "recipient": "other-csc", "purpose": "child-protection"}]}
		with data.sgbus.partnership as object.union(_partnership, {"emergency": emergency})
	ds[0].override == true
}

test_without_emergency_section_there_is_no_override if {
	ds := share.decisions with input as {"today": "2026-01-10", "requests": [{"event": _urgent_event, "recipient": "yjs", "purpose": "child-protection"}]}
		with data.sgbus.partnership as object.remove(_partnership, ["emergency"])
	ds[0].allow == false
}

test_override_needs_a_declaration_by_a_registered_role if {
	unsigned := object.remove(_urgent_event, ["override_role"])
	d := _decide("yjs", "child-protection", unsigned, "2026-01-10")
	d.allow == false
	d.override == false
	other_role := object.union(_urgent_event, {"override_role": "school business manager"})
	d2 := _decide("yjs", "child-protection", other_role, "2026-01-10")
	d2.allow == false
}

test_override_never_releases_free_text_unless_the_emergency_section_says_so if {
	d := _decide("yjs", "child-protection", _urgent_event, "2026-01-10")
	d.override == true
	not "circumstances" in d.fields
	d.free_text == {}
	every mode in ["redact", "reveal"] {
		emergency := object.union(_partnership.emergency, {"free_text": mode})
		ds := share.decisions with input as {"today": "2026-01-10", "requests": [{"event": _urgent_event, "recipient": "yjs", "purpose": "child-protection"}]}
			with data.sgbus.partnership as object.union(_partnership, {"emergency": emergency})
			with data.sgbus.catalogue as _catalogue
		ds[0].free_text == {"circumstances": mode}
		not "circumstances" in ds[0].fields
	}
}

test_override_reaches_only_the_emergency_sections_purposes if {
	# yjs is registered as social care; asked for youth justice, the override does not apply
	d := _decide("yjs", "youth-justice", object.union(_urgent_event, {"event_type": "police.exp.v1"}), "2026-01-10")
	d.allow == true # DSA-YJ's own share, unwidened
	d.override == false
	d.agreement == "DSA-YJ"
	d.identifiers == {}
}

test_override_free_text_leaves_a_field_the_agreement_drops_dropped if {
	agreements := [object.union(a, {"free_text": {"circumstances": "drop"}}) | some a in _partnership.agreements; a.id == "DSA-CSC"]
	emergency := object.union(_partnership.emergency, {"free_text": "reveal"})
	partnership := object.union(_partnership, {"emergency": emergency, "agreements": agreements})
	ds := share.decisions with input as {"today": "2026-01-10", "requests": [{"event": _urgent_event, "recipient": "csc", "purpose": "child-protection"}]}
		with data.sgbus.partnership as partnership
		with data.sgbus.catalogue as _catalogue
	ds[0].override == true
	ds[0].free_text == {}
}
