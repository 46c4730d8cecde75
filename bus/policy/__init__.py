"""Policy: partnership data, the OPA client, decisions, and loading policies into OPA."""
