"""Security at the bus's edges: the partnership CA, Kafka principals and ACLs, OPA tokens, file modes."""
