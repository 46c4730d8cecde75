# METADATA
# title: Multi-agency concern thresholds
# description: |
#   Decides, for each child's picture (which agencies reported which event types, when), which
#   of the partnership's concern rules (data.sgbus.partnership.concern, from
#   policies/data/concern.yaml) the child crosses now, and whether to raise a concern: on the
#   first crossing, and again only when the picture changed materially since the last raise.
#   Input: {"children": [{"key", "now" (unix s), "events": [{"agency", "event_type", "at"}],
#   "raised": {rule id: {"agencies", "event_types", "events"}}}]}. The picture holds no
#   identifier but the MASH's own token (key) and no free text.
package sgbus.concern

import rego.v1

concern := data.sgbus.partnership.concern

# One decision per child and rule.
decisions := [decision |
	some child in input.children
	some rule in concern.rules
	decision := _decision(child, rule)
]

_decision(child, rule) := {
	"key": child.key,
	"rule": rule.id,
	"crossed": crossed,
	"raise": _raise(child, rule, evs),
	"reasons": _reasons(rule, evs),
} if {
	evs := _in_window(child, rule)
	crossed := _crossed(rule, evs)
}

_in_window(child, rule) := [e |
	some e in child.events
	child.now - e.at <= rule.window_days * 86400
	e.at <= child.now
]

_agencies(evs) := {e.agency | some e in evs}

_types(evs) := {e.event_type | some e in evs}

_count(evs, event_type) := count([e | some e in evs; e.event_type == event_type])

default _enough_agencies(_, _) := false

_enough_agencies(rule, _) if rule.min_agencies == null

_enough_agencies(rule, evs) if count(_agencies(evs)) >= rule.min_agencies

_requirements_met(rule, evs) if {
	every event_type, n in rule.require {
		_count(evs, event_type) >= n
	}
}

default _crossed(_, _) := false

_crossed(rule, evs) if {
	count(evs) > 0
	_enough_agencies(rule, evs)
	_requirements_met(rule, evs)
}

default _raise(_, _, _) := false

_raise(child, rule, evs) if {
	_crossed(rule, evs)
	not child.raised[rule.id]
}

_raise(child, rule, evs) if {
	_crossed(rule, evs)
	_material(child.raised[rule.id], evs)
}

_material(previous, evs) if {
	concern.material_change.new_agency
	some agency in _agencies(evs)
	not agency in {a | some a in previous.agencies}
}

_material(previous, evs) if {
	concern.material_change.new_event_type
	some event_type in _types(evs)
	not event_type in {t | some t in previous.event_types}
}

_material(previous, evs) if {
	concern.material_change.more_events != null
	count(evs) >= previous.events + concern.material_change.more_events
}

_reasons(rule, evs) := [sprintf("%s: %d agencies, %d events in %d days", [
	rule.id, count(_agencies(evs)), count(evs), rule.window_days,
])] if {
	_crossed(rule, evs)
} else := [sprintf("%s: not crossed", [rule.id])]
