"""`sgbus keys`: create and rotate the pseudonymisation keyring and the audit signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bus.cli_common import fail, load_settings, open_audit

keys_app = typer.Typer(help="Create and rotate the pseudonymisation keys and the audit signing key.",
                       no_args_is_help=True)


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

    settings = load_settings()
    if settings.keyring_json is not None:
        fail("SGBUS_KEYRING_JSON is set: processes use the keyring from it, not the file this would rotate; "
             "rotate where the secret is made (its file), then update the secret", 2)
    path = settings.keyring_path
    with keyring_lock(path):  # read, rotate and write as one step
        rotated = load_keyring(path).rotated()
        save_keyring(rotated, path)
    typer.echo(f"rotated: token key {rotated.token.active}, seal key {rotated.seal.active}")


@keys_app.command("rotate-audit")
def keys_rotate_audit() -> None:
    """Replace the audit signing key with a new one; its public key joins the public key file
    (the old one stays, so old checkpoints still verify). Restart the audit stage to sign with
    it, then retire the old key with `sgbus keys retire-audit OLD_KID`."""
    from bus.audit.signer import load_signer, new_audit_signer, public_keys_path, signing_key_path
    from bus.exceptions import KeyringError

    settings = load_settings()
    if settings.audit_signing_key_json is not None:
        fail("SGBUS_AUDIT_SIGNING_KEY_JSON is set: the audit stage signs with the key from it, not the file this "
             "would rotate; rotate where the secret is made (its SGBUS_HOME), then update the secret", 2)
    if not signing_key_path(settings.home).is_file():
        fail("no audit signing key to rotate; run `sgbus keys init`", 2)
    try:
        old = load_signer(settings.home)
    except KeyringError as exc:
        fail(str(exc))
    new = new_audit_signer(settings.home)
    typer.echo(f"audit signing key rotated: {old.kid} -> {new.kid} ({signing_key_path(settings.home)}); "
               f"public keys: {public_keys_path(settings.home)}")
    typer.echo(f"next: start the audit stage with the new key, then `sgbus keys retire-audit {old.kid}`, "
               "and give auditors the new public key file")


@keys_app.command("retire-audit")
def keys_retire_audit(
    kid: Annotated[str, typer.Argument(help="the old audit key's id (`sgbus keys rotate-audit` printed it)")],
    public_keys: Annotated[Path | None, typer.Option(
        "--public-keys", help="the public key file to mark it in; default: SGBUS_AUDIT_PUBLIC_KEYS or "
                              "$SGBUS_HOME/audit-signing/public-keys.json")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="retire it even though it signed checkpoints after its successor began (those "
                        "then fail `audit verify`)")] = False,
) -> None:
    """After a rotation, limit an old audit key to the checkpoints it signed before its
    successor took over: whoever later gets hold of it cannot sign a newer head that
    `sgbus audit verify` or the audit stage would believe."""
    from bus.audit.chain import retirement_point, verify
    from bus.audit.signer import load_verifier, public_keys_path, retire_public
    from bus.exceptions import KeyringError

    settings = load_settings()
    path = public_keys or settings.audit_public_keys or public_keys_path(settings.home)
    try:
        verifier = load_verifier(path)
    except KeyringError as exc:
        fail(str(exc), 2)
    if kid not in verifier.keys:
        fail(f"no audit public key {kid} in {path}", 2)
    store = open_audit(settings)
    newest = store.latest_checkpoint()
    if newest is None or newest.key_id == kid:
        fail(f"the audit stage still signs with {kid}" + (f" (its newest checkpoint, at record {newest.seq})"
                                                           if newest else "") +
             ": start it with the new key (`sgbus keys rotate-audit`) and let it sign a batch first")
    # The point is read from the chain: only a chain that verifies, and only checkpoints whose
    # signatures do, may set it (a relabelled row must not stretch the old key's reach).
    checked = verify(store, verifier)
    if not checked.ok:
        fail(f"the audit chain does not verify ({checked.problem}); retire nothing until it does")
    last, after = retirement_point(store.checkpoints(), kid, verifier)
    if after and not force:
        fail(f"{kid} also signed checkpoints after its successor began (records {', '.join(map(str, after))}, "
             "an old pod's last appends in a rolling update?); retiring it at record "
             f"{last} would make them fail `audit verify`; --force to retire it anyway")
    earlier = verifier.retired.get(kid)
    if earlier is not None and earlier < last:
        last = earlier  # never widen an earlier retirement
    try:
        retire_public(path, kid, last)
    except (KeyringError, OSError) as exc:
        fail(f"cannot write {path}: {type(exc).__name__}")
    typer.echo(f"audit key {kid} retired: it vouches for checkpoints up to record {last} only ({path}); "
               "give auditors this public key file")
