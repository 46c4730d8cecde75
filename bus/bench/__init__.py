"""Benchmarks run against the real local stack (never timed unit tests)."""
