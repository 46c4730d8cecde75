"""Thin Faust agents: move bytes between topics and call the pure services."""
