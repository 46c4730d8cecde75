# METADATA
# title: Who may call OPA's REST API
# description: |
#   Part of the signed policy bundle OPA is started with (--authentication=token
#   --authorization=basic). Callers present a bearer token; data.system.sgbus_tokens maps each
#   role to the SHA-256 of its token (never the tokens themselves). Policies and data arrive
#   only in the signed bundle, so nobody may write them over the REST API, not even the
#   admin; the admin token may read and query (operators' checks), the worker token may only
#   ask for decisions and read the partnership data, the metrics token only read /metrics.
package system.authz

import rego.v1

default allow := false

# Readiness probes carry no token and learn nothing but "up".
allow if {
	input.method == "GET"
	input.path == ["health"]
}

allow if {
	role == "admin"
	input.method in {"GET", "POST"}
}

allow if {
	role == "worker"
	some call in worker_calls
	input.method == call.method
	input.path == call.path
}

# Prometheus scrapes OPA's own metrics (no policy, data or decision in them) and nothing else.
allow if {
	role == "metrics"
	input.method == "GET"
	input.path == ["metrics"]
}

worker_calls := [
	{"method": "POST", "path": ["v1", "data", "sgbus", "share", "decisions"]},
	{"method": "POST", "path": ["v1", "data", "sgbus", "concern", "decisions"]},
	{"method": "GET", "path": ["v1", "data", "sgbus"]},
]

role := name if {
	some name, digest in data.system.sgbus_tokens
	crypto.sha256(input.identity) == digest
}
