"""Event types per agency; each module defines payloads and their envelope subclasses."""
