"""sgbus: the secure multi-agency safeguarding event bus."""

__version__ = "0.1.0"
