# The partnership's own invariants, tested against its real agreements: `sgbus policy test`
# loads policies/data at data.sgbus.partnership (as the signed bundle does), so a change to the
# data that breaks one of these fails before it ships. Add the partnership's own here.
package sgbus.partnership_test

import data.sgbus.share

_partnership := data.sgbus.partnership

_schools := {p.id | some p in _partnership.partners; p.agency == "school"}

# A school never receives a child's NHS number, as a token or in clear.
test_no_agreement_gives_a_school_the_nhs_number if {
	count(_partnership.agreements) > 0
	every a in _partnership.agreements {
		every r in a.recipients {
			not _nhs_number_to_school(a, r)
		}
	}
}

_nhs_number_to_school(a, r) if {
	r in _schools
	object.get(object.get(a, "identifiers", {}), "nhs_number", "drop") != "drop"
}

# The emergency override widens sharing to police and children's social care only.
test_the_emergency_override_never_reaches_a_school if {
	not "school" in _partnership.emergency.recipient_agencies
	not "nhs" in _partnership.emergency.recipient_agencies
}

# Operation Encompass: a domestic abuse notification goes to the child's own school only.
test_an_encompass_notification_reaches_only_the_childs_school if {
	event := {
		"event_id": "e1", "event_type": "police.domestic_abuse_incident.v1", "agency": "police", "org_id": "NSP",
		"attributes": {"school_urn": "900001", "child_present": true},
	}
	ds := share.decisions with input as {"today": "2026-06-01", "requests": [
		{"event": event, "recipient": "oakfield-primary", "purpose": "operation-encompass"},
		{"event": event, "recipient": "riverside-academy", "purpose": "operation-encompass"},
	]}
	[d.allow | some d in ds] == [true, false]
}
