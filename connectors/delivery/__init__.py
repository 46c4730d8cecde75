"""Outbound delivery: from a partner's topic to the partner's systems (webhook, file drop)."""
