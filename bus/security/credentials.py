"""SCRAM secrets of the local stack's principals, one 0600 JSON file each under
$SGBUS_HOME/credentials; the broker itself keeps only salted SCRAM hashes."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus.exceptions import ConfigurationError
from bus.security.files import private_dir, write_private


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)
    created_at: str = ""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class CredentialStore:
    def __init__(self, home: Path) -> None:
        self.dir = home / "credentials"

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> Credential | None:
        try:
            raw = json.loads(self._path(name).read_text())
            return Credential(raw["username"], raw["password"], raw.get("created_at", ""))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"credential file of {name} is unreadable: {self._path(name)}") from None

    def require(self, name: str) -> Credential:
        cred = self.get(name)
        if cred is None:
            raise ConfigurationError(
                f"no Kafka credentials for principal {name!r} in {self.dir}; run `sgbus stack up` "
                "(or `sgbus partners sync`), or set SGBUS_KAFKA_USERNAME and SGBUS_KAFKA_PASSWORD")
        return cred

    def put(self, name: str, password: str | None = None) -> Credential:
        private_dir(self.dir)
        cred = Credential(name, password or new_secret(), datetime.now(UTC).isoformat(timespec="seconds"))
        write_private(self._path(name), json.dumps(
            {"username": cred.username, "password": cred.password, "created_at": cred.created_at}))
        return cred

    def ensure(self, name: str) -> tuple[Credential, bool]:
        """(credential, created now)."""
        cred = self.get(name)
        return (cred, False) if cred is not None else (self.put(name), True)

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
