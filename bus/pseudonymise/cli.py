"""`sgbus keys`: create and rotate the pseudonymisation keyring (and the audit signing key)."""

from __future__ import annotations

import typer

from bus.cli_common import load_settings

keys_app = typer.Typer(help="Create and rotate pseudonymisation keys.", no_args_is_help=True)


@keys_app.command("init")
def keys_init() -> None:
    """Create the keyring and, apart from it, the audit signing key (mode 0600) if they do not
    exist. Key material is never printed."""
    from bus.audit.signer import ensure_audit_signer, public_keys_path
    from bus.pseudonymise.keyring import init_keyring

    settings = load_settings()
    path = settings.keyring_path
    keyring, created = init_keyring(path)
    state = "created" if created else "already exists"
    typer.echo(f"keyring {state} at {path} (token key {keyring.token.active}, seal key {keyring.seal.active})")
    signer, made = ensure_audit_signer(settings.home)
    typer.echo(f"audit signing key {'created' if made else 'already exists'} ({signer.kid}); "
               f"public keys for auditors: {public_keys_path(settings.home)}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add new active keys; old keys stay so old tokens and seals still resolve."""
    from bus.pseudonymise.keyring import keyring_lock, load_keyring, save_keyring

    path = load_settings().keyring_path
    with keyring_lock(path):  # read, rotate and write as one step
        rotated = load_keyring(path).rotated()
        save_keyring(rotated, path)
    typer.echo(f"rotated: token key {rotated.token.active}, seal key {rotated.seal.active}")
