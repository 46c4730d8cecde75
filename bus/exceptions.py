"""The one exception family of sgbus; messages never carry identifiers or event text.

Invalid events are not exceptions at the bus level: `schemas.registry.InvalidEvent` turns into a
dead letter, and a denied share is an audited decision, not an error."""

from __future__ import annotations


class SgbusError(Exception):
    """Root of every error sgbus raises on purpose."""


class ConfigurationError(SgbusError):
    """Settings, key files or policy data are missing or inconsistent."""


class ToolchainError(SgbusError):
    """A pinned tool (Kafka, OPA) could not be fetched, verified or built."""


class StackError(SgbusError):
    """The local stack could not be started, reached or stopped."""


class PolicyUnavailable(SgbusError):
    """OPA could not answer. Fail closed: share nothing, keep the event, retry later."""


class PolicyDataError(SgbusError):
    """Policy data (partners, subscriptions, agreements) is invalid."""


class KeyringError(SgbusError):
    """Keys are missing, unreadable or do not open a sealed value (no key material shown)."""
