"""`sgbus policy`: check, test, simulate, bundle and reload the data-sharing policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bus.cli_common import err, fail, load_settings, local_stack

policy_app = typer.Typer(help="Check, test and reload the data-sharing policies.", no_args_is_help=True)


@policy_app.command("check")
def policy_check() -> None:
    """Validate policy data (YAML) and the Rego: opa fmt and opa check --strict."""
    from bus.policy.tooling import check_policies

    problems = check_policies(load_settings().policies_dir)
    if problems:
        for p in problems:
            err(p)
        raise typer.Exit(1)
    typer.echo("policies OK")


@policy_app.command("test")
def policy_test() -> None:
    """Run the Rego tests (opa test) with coverage."""
    from bus.policy.tooling import run_policy_tests

    ok, output = run_policy_tests(load_settings().policies_dir)
    typer.echo(output)
    if not ok:
        raise typer.Exit(1)


@policy_app.command("reload")
def policy_reload() -> None:
    """Validate the policies and data, build and sign the policy bundle, and restart the local
    stack's OPA with it (running workers hold their batches meanwhile and pick the new revision
    up); prints the new revision."""
    settings = load_settings()
    if settings.opa_url is not None:
        fail("policy reload restarts the local stack's OPA; for an OPA run elsewhere, build the signed "
             "bundle with `sgbus policy bundle --out FILE` and serve it from that OPA's bundle service", 2)
    stack = local_stack(settings, quiet=True)
    if not stack.status()["opa"]["alive"]:
        fail(f"OPA is not running under {settings.home}; run `sgbus stack up`")
    revision = stack.reload_policies()
    typer.echo(f"loaded revision {revision} (signed bundle {settings.home / 'opa' / 'policies.tar.gz'})")


@policy_app.command("bundle")
def policy_bundle(
    out: Annotated[Path, typer.Option("--out", help="where to write the signed bundle (.tar.gz)")],
) -> None:
    """Build the policy bundle, signed with the partnership's policy key, for an OPA that loads
    bundles from a bundle service, with the signing key register (publishers' and declarers'
    keys issued here, of partners still in the data); its verification key is printed."""
    from bus.policy.bundle import build_bundle, current_signers, ensure_policy_key
    from bus.policy.data import load_partnership
    from bus.provenance.registry import LocalSigners
    from bus.security.opa_auth import token_hashes

    settings = load_settings()
    key = ensure_policy_key(settings.home)
    signers = LocalSigners(settings.home).registry()
    bundle = build_bundle(settings.policies_dir, out, key, token_hashes(settings.home), signers=signers)
    kept = current_signers(signers, load_partnership(settings.policies_dir / "data"))
    typer.echo(f"wrote {bundle.path}: revision {bundle.revision}, signed ES256, {len(kept.publishers)} publisher "
               f"and {len(kept.declarers)} declarer key(s); verification key {key.public}")
    if not kept.publishers:
        err("warning: no publisher signing key is in the bundle: every event would be refused as "
            "unknown_signing_key (issue them with `sgbus partners keys issue` in this SGBUS_HOME)")


@policy_app.command("simulate")
def policy_simulate(
    policies: Annotated[Path, typer.Option("--policies", help="the proposed policy set (a policies/ folder)")],
    events: Annotated[Path, typer.Option("--events", help="events to try, JSON lines (e.g. from sgbus synth)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the changes as JSON")] = False,
    today: Annotated[str | None, typer.Option(help="date agreements are checked against (default today)")] = None,
) -> None:
    """Show what a proposed policy set would change: per event (and per declared-urgent copy,
    for the emergency section), recipients added or removed and fields, identifier modes or
    demographics changed, today and from each later day an agreement starts or ends; partners,
    subscriptions and the emergency section changed; and which children (by the MASH's token)
    would newly cross, or no longer cross, a multi-agency concern threshold. Nothing is loaded
    into OPA."""
    from bus.policy.simulate import simulate
    from schemas.registry import InvalidEvent, parse_event

    if not (policies / "data").is_dir():
        fail(f"--policies: {policies} is not a policies folder (no data/ inside)", 2)
    if not events.is_file():
        fail(f"--events: no such file: {events}", 2)
    parsed = []
    for number, line in enumerate(events.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(parse_event(line))
        except InvalidEvent as exc:
            p = exc.problems[0]
            fail(f"--events line {number}: {p.field}: {p.message} [{p.code}]", 2)
    from bus.exceptions import KeyringError
    from bus.pseudonymise.keyring import load_keyring

    settings = load_settings()
    try:  # children are named by the MASH's token when the keyring is at hand
        keyring = load_keyring(settings.keyring_path)
    except KeyringError:
        keyring = None
    result = simulate(settings.policies_dir, policies, parsed, today, keyring=keyring)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        for line in result.render():
            typer.echo(line)
