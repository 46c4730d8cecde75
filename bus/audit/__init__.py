"""Audit: one record per policy decision, allow or deny."""
