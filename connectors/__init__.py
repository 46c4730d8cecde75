"""Connectors: partner-format mappers in, delivery out (built in later issues)."""
