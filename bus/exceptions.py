"""The one exception family of sgbus; messages never carry identifiers or event text."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Rejection:
    """One machine-readable reason an event was refused: where, what kind, and why."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}

    def one_line(self) -> str:
        return f"{self.field}: {self.message} [{self.code}]"


class SchemaRejected(SgbusError):
    """An event failed validation; it goes to the dead-letter topic with its reasons."""

    def __init__(self, reasons: list[Rejection]) -> None:
        self.reasons = reasons
        first = reasons[0].one_line() if reasons else "invalid event"
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        super().__init__(first + more)


class ShareDenied(SgbusError):
    """A share was denied by policy: audited, never retried."""


class KeyringError(SgbusError):
    """Keys are missing, unreadable or do not open a sealed value (no key material shown)."""
