"""What every `sgbus` command group shares: messages, exit codes, settings, and the way to the
running stack (Kafka as a named principal, OPA, the audit store, the keyring)."""

from __future__ import annotations

from typing import NoReturn

import typer

from bus.settings import Settings


def err(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err(f"error: {message}")
    raise typer.Exit(code)


def load_settings() -> Settings:
    from bus.security.files import untrusted_home

    settings = Settings()
    problem = untrusted_home(settings.home)
    if problem is not None:
        fail(f"SGBUS_HOME {settings.home} is {problem}: its keyring, credentials and keys could be someone "
             "else's; use a directory of your own (sgbus makes it 0700)", 2)
    return settings


def local_stack(settings: Settings, quiet: bool = False):  # type: ignore[no-untyped-def]
    from bus.stack import Stack

    return Stack(settings.home, settings.policies_dir, progress=(lambda _m: None) if quiet else err)


def resolve_endpoints(settings: Settings) -> tuple[str, str]:
    """Kafka bootstrap and OPA URL from SGBUS_* settings, else from the running local stack."""
    from bus.stack import read_endpoints

    bootstrap, opa_url = settings.kafka_bootstrap, settings.opa_url
    if bootstrap is None or opa_url is None:
        local_bootstrap, local_opa = read_endpoints(settings.home)
        bootstrap = bootstrap or local_bootstrap
        opa_url = opa_url or local_opa
    if bootstrap is None or opa_url is None:
        fail(f"the local stack is not running under {settings.home}; run `sgbus stack up` "
             "(or set SGBUS_KAFKA_BOOTSTRAP and SGBUS_OPA_URL)")
    return bootstrap, opa_url


def kafka_as(settings: Settings, bootstrap: str, principal: str):  # type: ignore[no-untyped-def]
    """Kafka access as `principal` (see bus/security/resolve.py); configuration errors exit 2."""
    from bus.exceptions import ConfigurationError
    from bus.security.resolve import kafka_access

    try:
        return kafka_access(settings, bootstrap, principal)
    except ConfigurationError as exc:
        fail(str(exc), 2)


def open_audit(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.audit.chain import AuditStoreError, open_audit_store

    if settings.audit_dsn is None and not settings.audit_db_path.is_file():
        fail(f"no audit store at {settings.audit_db_path} (run the worker first, or set SGBUS_AUDIT_DB "
             "or SGBUS_AUDIT_DSN)")
    try:
        return open_audit_store(settings)
    except AuditStoreError as exc:
        fail(str(exc))


def load_keyring(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.pseudonymise.keyring import keyring_from_settings

    secret = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    return keyring_from_settings(settings.keyring_path, secret)
