package sgbus.share_test

import data.sgbus.share

_partnership := {
	"partners": [
		{"id": "police", "agency": "police", "org_id": "NSP"},
		{"id": "school-a", "agency": "school", "org_id": "900001"},
		{"id": "school-b", "agency": "school", "org_id": "900002"},
		{"id": "csc", "agency": "social_care", "org_id": "N01"},
		{"id": "other-csc", "agency": "social_care", "org_id": "S01"},
	],
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
			"fields": ["incident_at", "circumstances"],
			"identifiers": {"nhs_number": "token"},
			"demographics": {"dob": "full", "postcode": "full", "name": "full"},
			"conditions": [{"recipient_org_matches": null, "attribute": "child_present", "equals": true}],
			"valid_from": "2025-01-01",
			"valid_to": null,
			"retention_days": 2555,
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

_decide(recipient, purpose, event, today) := d if {
	ds := share.decisions with input as {"today": today, "requests": [{"event": event, "recipient": recipient, "purpose": purpose}]}
		with data.sgbus.partnership as _partnership
		with data.sgbus.meta.revision as "rev-test"
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
	d.fields == ["incident_at", "circumstances"]
	d.identifiers == {"nhs_number": "token"}
	d.lawful_basis == ["s.47"]
	d.retention_days == 2555
}

test_deny_shares_nothing if {
	d := _decide("school-b", "encompass", _event, "2026-01-10")
	d.fields == []
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
