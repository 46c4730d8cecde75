"""Which credentials a command uses: explicit SGBUS_KAFKA_* / SGBUS_OPA_TOKEN settings, else the
local stack's store for the command's own principal (README "Security model")."""

from __future__ import annotations

from pathlib import Path

from bus.exceptions import ConfigurationError
from bus.security import opa_auth
from bus.security.kafka_access import KafkaAccess, local_access
from bus.security.pki import ca_path
from bus.settings import Settings


def kafka_access(settings: Settings, bootstrap: str, principal: str) -> KafkaAccess:
    """Access as `principal` (or `SGBUS_KAFKA_PRINCIPAL`), unless a SCRAM user is configured."""
    if settings.kafka_username:
        if settings.kafka_password is None:
            raise ConfigurationError("SGBUS_KAFKA_USERNAME is set but SGBUS_KAFKA_PASSWORD is not")
        ca = _ca_file(settings)
        if not ca.is_file():
            raise ConfigurationError(f"no partnership CA certificate at {ca} (set SGBUS_CA_FILE)")
        return KafkaAccess(bootstrap, settings.kafka_username, settings.kafka_password.get_secret_value(), ca)
    access = local_access(settings.home, bootstrap, settings.kafka_principal or principal)
    if settings.ca_file is not None:
        return KafkaAccess(access.bootstrap, access.username, access.password, settings.ca_file)
    return access


def _ca_file(settings: Settings) -> Path:
    return settings.ca_file or ca_path(settings.home)


def opa_token(settings: Settings, role: opa_auth.OpaRole) -> str:
    if settings.opa_token is not None:
        return settings.opa_token.get_secret_value()
    return opa_auth.local_token(settings.home, role)


def opa_access(settings: Settings, opa_url: str, role: opa_auth.OpaRole) -> opa_auth.OpaAccess:
    """OPA as `role`: its token (SGBUS_OPA_TOKEN or the local store's) over TLS checked
    against the partnership CA."""
    opa_auth.check_url(opa_url)
    ca = _ca_file(settings)
    if opa_url.startswith("https://") and not ca.is_file():
        raise ConfigurationError(f"no partnership CA certificate at {ca} to check OPA's (set SGBUS_CA_FILE)")
    return opa_auth.OpaAccess(opa_url, opa_token(settings, role), ca)
