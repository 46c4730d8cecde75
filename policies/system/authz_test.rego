package system.authz_test

import rego.v1

import data.system.authz

tokens := {
	"admin": crypto.sha256("admin-secret"),
	"worker": crypto.sha256("worker-secret"),
	"metrics": crypto.sha256("metrics-secret"),
}

decide_path := ["v1", "data", "sgbus", "share", "decisions"]

test_anonymous_health_check_is_allowed if {
	authz.allow with input as {"method": "GET", "path": ["health"]} with data.system.sgbus_tokens as tokens
}

test_anonymous_query_is_refused if {
	not authz.allow with input as {"method": "POST", "path": decide_path}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_ask_for_decisions if {
	authz.allow with input as {"method": "POST", "path": decide_path, "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_read_partnership_data if {
	authz.allow with input as {"method": "GET", "path": ["v1", "data", "sgbus"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_not_write_a_policy if {
	not authz.allow with input as {"method": "PUT", "path": ["v1", "policies", "allow_all"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_not_write_data if {
	not authz.allow with input as {"method": "PUT", "path": ["v1", "data", "sgbus", "partnership"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_not_read_the_token_hashes if {
	not authz.allow with input as {"method": "GET", "path": ["v1", "data", "system"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_not_query_other_rules if {
	not authz.allow with input as {"method": "POST", "path": ["v1", "data", "sgbus", "share", "allow_all"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}

test_unknown_token_is_refused if {
	not authz.allow with input as {"method": "PUT", "path": ["v1", "policies", "x"], "identity": "guess"}
		with data.system.sgbus_tokens as tokens
}

test_admin_may_read_and_query if {
	authz.allow with input as {"method": "GET", "path": ["v1", "data", "system"], "identity": "admin-secret"}
		with data.system.sgbus_tokens as tokens
	authz.allow with input as {"method": "POST", "path": decide_path, "identity": "admin-secret"}
		with data.system.sgbus_tokens as tokens
}

test_nobody_may_write_policies_or_data_over_rest_not_even_the_admin if {
	every method in ["PUT", "PATCH", "DELETE"] {
		not authz.allow with input as {"method": method, "path": ["v1", "policies", "x"], "identity": "admin-secret"}
			with data.system.sgbus_tokens as tokens
		not authz.allow with input as {"method": method, "path": ["v1", "data", "sgbus"], "identity": "admin-secret"}
			with data.system.sgbus_tokens as tokens
	}
}

test_metrics_token_may_read_metrics if {
	authz.allow with input as {"method": "GET", "path": ["metrics"], "identity": "metrics-secret"}
		with data.system.sgbus_tokens as tokens
}

test_anonymous_metrics_read_is_refused if {
	not authz.allow with input as {"method": "GET", "path": ["metrics"]}
		with data.system.sgbus_tokens as tokens
}

test_metrics_token_may_not_read_data_or_ask_for_decisions if {
	not authz.allow with input as {"method": "GET", "path": ["v1", "data", "sgbus"], "identity": "metrics-secret"}
		with data.system.sgbus_tokens as tokens
	not authz.allow with input as {"method": "POST", "path": decide_path, "identity": "metrics-secret"}
		with data.system.sgbus_tokens as tokens
}

test_worker_may_ask_for_concern_decisions if {
	authz.allow with input as {"method": "POST", "path": ["v1", "data", "sgbus", "concern", "decisions"], "identity": "worker-secret"}
		with data.system.sgbus_tokens as tokens
}
