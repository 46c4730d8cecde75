# METADATA
# title: Data-sharing decisions
# description: >-
#   Turns the partnership's agreements (data.sgbus.partnership, edited as YAML) into one
#   decision per (event, recipient). Deny by default; every deny carries its reasons.
package sgbus.share

# METADATA
# description: Revision of the loaded policies and data; carried by every decision.
default revision := "unversioned"

revision := data.sgbus.meta.revision

# METADATA
# description: All decisions for input.requests, in request order (one query per batch).
# entrypoint: true
decisions := [decide(req) | some req in input.requests]

# METADATA
# description: The decision for one request {event, recipient, purpose}.
decide(req) := _with_override(req, _decide_covered(req, _covering(req)))

# The covering agreements are found once per request; the allow path checks them without
# building failure messages, which only a deny needs.
_decide_covered(req, covering) := _allow(req, agreement) if {
	applicable := [a | some a in covering; _passes(a, req)]
	count(applicable) > 0
	agreement := applicable[0]
} else := _deny(req, covering)

default _partners := []

_partners := data.sgbus.partnership.partners

default _agreements := []

_agreements := data.sgbus.partnership.agreements

default _emergency := null

_emergency := data.sgbus.partnership.emergency

# Indexes built once per query and shared by every request in the batch: partners by id and
# by source organisation, agreements by event type.
_partner_index := {p.id: p | some p in _partners}

_partner(id) := _partner_index[id]

_partner_ids_by_source[_source_key(p.agency, p.org_id)] contains p.id if some p in _partners

_source_key(agency, org_id) := concat("/", [agency, org_id])

_source_partner_ids(event) := object.get(_partner_ids_by_source, _source_key(event.agency, event.org_id), set())

_agreements_by_type[t] contains i if {
	some i, a in _agreements
	some t in a.event_types
}

_covers(a, req) if {
	req.recipient in a.recipients
	some provider in _source_partner_ids(req.event)
	provider in a.providers
}

# In the agreements' order (by id), so the first applicable agreement is always the same one.
_covering(req) := [_agreements[i] |
	some i in sort(object.get(_agreements_by_type, req.event.event_type, set()))
	_covers(_agreements[i], req)
]

# The same tests as _failures, as one rule body that stops at the first that fails.
_passes(a, req) if {
	input.today >= a.valid_from
	not _expired_on(a)
	req.purpose in a.purposes
	every c in a.conditions {
		_holds(c, req)
	}
	not _outside_area_of(a, req)
}

_expired_on(a) if {
	a.valid_to != null
	input.today > a.valid_to
}

_outside_area_of(a, req) if {
	a.areas != null
	area := _partner(req.recipient).area
	not area in a.areas
}

_failures(a, req) := (((_not_yet_in_force(a) | _expired(a)) | _purpose_not_covered(a, req)) | _unmet_conditions(a, req)) | _outside_area(a, req)

_outside_area(a, req) := {sprintf("%s: recipient area %s is not covered", [a.id, _partner(req.recipient).area]) |
	a.areas != null
	not _partner(req.recipient).area in a.areas
}

_not_yet_in_force(a) := {sprintf("%s: not in force until %s", [a.id, a.valid_from]) |
	input.today < a.valid_from
}

_expired(a) := {sprintf("%s: expired on %s", [a.id, a.valid_to]) |
	a.valid_to != null
	input.today > a.valid_to
}

_purpose_not_covered(a, req) := {sprintf("%s: purpose %s is not covered", [a.id, req.purpose]) |
	not req.purpose in a.purposes
}

_unmet_conditions(a, req) := {sprintf("%s: condition not met: %s", [a.id, _describe(c)]) |
	some c in a.conditions
	not _holds(c, req)
}

_holds(c, req) if {
	c.recipient_org_matches != null
	_partner(req.recipient).org_id == object.get(req.event.attributes, c.recipient_org_matches, null)
}

_holds(c, req) if {
	c.attribute != null
	object.get(req.event.attributes, c.attribute, null) == c.equals
}

_describe(c) := sprintf("recipient is the organisation named in %s", [c.recipient_org_matches]) if {
	c.recipient_org_matches != null
} else := sprintf("%s must be %v", [c.attribute, c.equals])

# METADATA
# description: >-
#   Emergency override: an event declaring an urgent risk of significant harm, with a
#   recorded justification and a declaration the bus verified as signed by a key registered to
#   one of the emergency section's declarer_roles, widens what police and social care in the
#   source's area receive: every payload field except free text (unless the emergency section
#   says free_text: reveal), identifiers and demographics as it sets. The decision is marked
#   override=true and keeps the reasons it would otherwise have had.
_with_override(req, d) := _override(req, d) if {
	_override_applies(req)
} else := d

_override_applies(req) if {
	_emergency != null
	req.event.urgent == true
	req.event.justification_recorded == true
	req.event.override_role in _emergency.declarer_roles
	p := _partner(req.recipient)
	p.agency in _emergency.recipient_agencies

	# By purpose too: agency alone let it reach a youth justice service, registered as social care.
	req.purpose in _emergency.recipient_purposes
	_override_area_ok(req, p)
}

_override_area_ok(_, _) if _emergency.same_area_only == false

_override_area_ok(req, p) if {
	some id in _source_partner_ids(req.event)
	_partner(id).area == p.area
}

_override(req, d) := object.union(d, {
	"allow": true,
	"override": true,
	"agreement": _override_agreement(d),
	"lawful_basis": array.concat(d.lawful_basis, _emergency.lawful_basis),
	"fields": _override_fields(req, d),
	"free_text": _override_free_text(req, d),
	"identifiers": _emergency.identifiers,
	"demographics": _emergency.demographics,
	"retention_days": max([d.retention_days, _emergency.retention_days]),
	"reasons": array.concat(
		[sprintf("%s: urgent risk of significant harm declared by %s with a recorded justification", [_emergency.id, req.event.override_role])],
		[sprintf("without the override: %s", [r]) | some r in d.reasons],
	),
})

# Free text names the people around the child. An agreement names a mode per free-text field
# (reveal: the sealed original; redact: the redacted copy; drop, the default); only the event
# type's own free-text fields count. data.sgbus.catalogue (built from the event schemas) lists
# each event type's payload fields and which of them are free text.
_free_text(req, a) := {f: m |
	some f, m in object.get(a, "free_text", {})
	m != "drop"
	f in _catalogue_free_text(req)
}

# An override adds every payload field that is not free text; free text only as the emergency
# section says (the agreement's own choice stands where it made one).
_override_fields(req, d) := sort(array.concat(
	d.fields,
	[f |
		some f in object.get(data.sgbus.catalogue, [req.event.event_type, "fields"], [])
		not f in _catalogue_free_text(req)
		not f in d.fields
	],
))

_override_free_text(req, d) := d.free_text if {
	object.get(_emergency, "free_text", "drop") == "drop"
} else := object.union(
	{f: _emergency.free_text |
		some f in _catalogue_free_text(req)
		not f in _named_free_text(d)
	},
	d.free_text,
)

# The free-text fields the allowing agreement names, whatever their mode: an explicit drop stands.
_named_free_text(d) := {f |
	d.allow
	some a in _agreements
	a.id == d.agreement
	some f, _ in object.get(a, "free_text", {})
}

_catalogue_free_text(req) := object.get(data.sgbus.catalogue, [req.event.event_type, "free_text"], [])

_override_agreement(d) := d.agreement if d.allow

else := _emergency.id

_allow(req, a) := {
	"event_id": req.event.event_id,
	"recipient": req.recipient,
	"allow": true,
	"agreement": a.id,
	"lawful_basis": a.lawful_basis,
	"purpose": req.purpose,
	"fields": a.fields,
	"free_text": _free_text(req, a),
	"identifiers": a.identifiers,
	"demographics": a.demographics,
	"retention_days": a.retention_days,
	"override": false,
	"reasons": [sprintf("%s allows %s to %s for %s", [a.id, req.event.event_type, req.recipient, req.purpose])],
	"revision": revision,
}

_deny(req, covering) := {
	"event_id": req.event.event_id,
	"recipient": req.recipient,
	"allow": false,
	"agreement": null,
	"lawful_basis": [],
	"purpose": req.purpose,
	"fields": [],
	"free_text": {},
	"identifiers": {},
	"demographics": {"dob": "drop", "postcode": "drop", "name": "drop"},
	"retention_days": 0,
	"override": false,
	"reasons": _deny_reasons(req, covering),
	"revision": revision,
}

_deny_reasons(req, covering) := ["recipient is not a partner of this partnership"] if {
	not _partner(req.recipient)
} else := [sprintf("no agreement covers %s from %s/%s to %s", [
	req.event.event_type, req.event.agency, req.event.org_id, req.recipient,
])] if {
	count(covering) == 0
} else := sort([msg | some a in covering; some msg in _failures(a, req)])
