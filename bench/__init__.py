"""Benchmarks run against the real local stack (never timed unit tests); not part of the
product package: `python -m bench` from the repository root (`make bench`)."""
