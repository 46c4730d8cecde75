"""Pseudonymisation: keyed tokens, sealed identity, generalisation, per-recipient views."""
