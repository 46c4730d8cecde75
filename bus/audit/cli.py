"""`sgbus audit`: verify the chain against its published head, and who received what about a child."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bus.cli_common import err, fail, kafka_as, load_keyring, load_settings, open_audit, resolve_endpoints
from bus.settings import Settings

if TYPE_CHECKING:  # the CLI imports the audit code only when a command needs it
    from bus.audit.chain import AuditStore, Checkpoint
    from bus.audit.lookups import Reason
    from bus.audit.signer import AuditVerifier
    from bus.pseudonymise.keyring import Keyring

audit_app = typer.Typer(help="Verify the audit chain and answer who received what about a child.",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    public_keys: Annotated[Path | None, typer.Option(
        "--public-keys", help="audit public keys (JSON); default: SGBUS_AUDIT_PUBLIC_KEYS or "
                              "$SGBUS_HOME/audit-signing/public-keys.json")] = None,
    head_file: Annotated[Path | None, typer.Option(
        "--head", help="check against this saved head (JSON from `sgbus audit head`) instead of "
                       "reading sg.audit.heads")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="do not read the published head (weaker: a removed tail can go unnoticed)")] = False,
) -> None:
    """Check the hash chain, its columns and its signed checkpoints with the public key only,
    against the latest head published on sg.audit.heads; name the first bad record."""
    from bus.audit.chain import Checkpoint, verify
    from bus.audit.signer import load_verifier, public_keys_path
    from bus.exceptions import KeyringError

    settings = load_settings()
    try:
        verifier = load_verifier(public_keys or settings.audit_public_keys or public_keys_path(settings.home))
    except KeyringError as exc:
        fail(str(exc), 2)
    published = None
    if head_file is not None:
        try:
            published = Checkpoint.from_json(head_file.read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            fail(f"--head: {head_file} is not a saved audit head", 2)
    elif not offline:
        published = _published_head(settings, verifier)
    result = verify(open_audit(settings), verifier, published)
    if result.ok:
        against = (f"matches the published head at record {result.published_seq}" if published
                   else "NOT checked against a published head")
        typer.echo(f"audit OK: {result.records} records, {result.checkpoints} signed checkpoints, "
                   f"head {result.head[:16]}; {against}")
        return
    err(f"audit FAILED: {result.problem}")
    raise typer.Exit(1)


def _published_head(settings: Settings, verifier: AuditVerifier | None = None) -> Checkpoint | None:
    from bus.audit.heads import latest_head
    from bus.exceptions import StackError
    from bus.security.principals import ADMIN

    bootstrap = settings.kafka_bootstrap or resolve_endpoints(settings)[0]
    try:
        return latest_head(kafka_as(settings, bootstrap, ADMIN), verifier=verifier)
    except StackError as exc:
        fail(f"cannot read the published audit heads: {exc} (use --head FILE or --offline)")


@audit_app.command("head")
def audit_head() -> None:
    """Print the latest signed audit head published on sg.audit.heads (JSON), to keep and
    verify against later with `sgbus audit verify --head FILE`."""
    head = _published_head(load_settings())
    if head is None:
        fail("no audit head has been published yet")
    typer.echo(head.to_json().decode())


REASON_HELP = ("why you are looking this child up, recorded before anything is shown: "
                "safeguarding, subject-access, data-protection or audit")
CASE_REF_HELP = "the case or ticket reference the look-up is for (letters, digits, / _ . -), recorded with it"


def reason_option(reason: str | None) -> Reason:
    """The --reason a person gave, or a usage error listing the choices."""
    from bus.audit.lookups import ASKABLE, Reason

    if reason is None:
        fail(f"--reason: say why you are looking this child up (one of: {', '.join(ASKABLE)}); "
             "every look-up is recorded in the audit store (`sgbus audit lookups`)", 2)
    if reason not in ASKABLE:  # not quoted back: it could be anything typed
        fail(f"--reason: use one of: {', '.join(ASKABLE)}", 2)
    return Reason(reason)


def record_or_fail(settings: Settings, store: AuditStore | None, *, command: str, reason: Reason, case_ref: str | None,
                   tokens: set[str], asked_as: str = "") -> None:
    """Record the look-up, or stop before anything about the child is read."""
    from bus.audit.chain import AuditStoreError
    from bus.audit.lookups import LookupRefused, record_lookup

    try:
        record_lookup(store or open_audit(settings), command=command, reason=reason, case_ref=case_ref or "",
                      tokens=tokens, asked_as=asked_as)
    except LookupRefused as exc:
        fail(str(exc), 2)
    except AuditStoreError as exc:
        fail(f"the look-up could not be recorded, so nothing is shown: {exc}")


@audit_app.command("trail")
def audit_trail(
    nhs_number: Annotated[str | None, typer.Option(
        "--nhs-number", help="the child's NHS number; - reads it from standard input (kept out of the shell's "
                             "history and the process list)")] = None,
    token: Annotated[str | None, typer.Option("--token", help="a controller token (psn:...)")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP, show_default=False)] = None,
    case_ref: Annotated[str | None, typer.Option("--case-ref", help=CASE_REF_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON lines")] = False,
    # Caught here, not by click, whose error would print them: an unquoted `--nhs-number 943 476
    # 5919` leaves the rest of a child's number as extra arguments.
    extra: Annotated[list[str] | None, typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Who received what about a child, when, under which agreement, lawful basis and policy
    revision, and which shares were denied and why. The look-up itself is recorded first
    (`sgbus audit lookups`)."""
    from bus.audit.trail import render, subject_tokens, trail

    _refuse_extra(extra)
    why = reason_option(reason)
    settings = load_settings()
    tokens = _asked_tokens(settings, nhs_number, token, lambda keyring, nhs: subject_tokens(keyring, "nhs_number", nhs))
    store = open_audit(settings)
    record_or_fail(settings, store, command="audit trail", reason=why, case_ref=case_ref, tokens=tokens)
    _show(trail(store, tokens), as_json, render)


def _refuse_extra(extra: list[str] | None) -> None:
    # Caught here, not by click, whose error would print them: an unquoted `--nhs-number 943 476
    # 5919` leaves the rest of a child's number as extra arguments.
    if extra:
        fail("unexpected arguments after the options (not shown: they may be part of a child's number); "
             "quote a value with spaces, or give --nhs-number - and type it on standard input", 2)


def _show(rows: list[dict[str, Any]], as_json: bool, render: Callable[[list[dict[str, Any]]], list[str]]) -> None:
    """Rows as JSON lines, or as `render` words them."""
    for line in (json.dumps(r) for r in rows) if as_json else render(rows):
        typer.echo(line)


def _asked_tokens(settings: Settings, nhs_number: str | None, token: str | None,
                  tokens_of: Callable[[Keyring, str], set[str]]) -> set[str]:
    """The tokens asked about: from exactly one of --nhs-number (through the keyring) or --token."""
    from schemas.identifiers import nhs_number_is_valid

    if (nhs_number is None) == (token is None):
        fail("give exactly one of --nhs-number or --token", 2)
    if nhs_number == "-":
        nhs_number = sys.stdin.readline().strip()
    if nhs_number is not None:
        nhs = nhs_number.replace(" ", "").replace("-", "")
        if not nhs_number_is_valid(nhs):
            fail("--nhs-number: not a valid NHS number (10 digits with a modulus 11 check digit)", 2)
        return tokens_of(load_keyring(settings), nhs)
    assert token is not None
    from bus.audit.lookups import LookupRefused, check_token

    try:
        return {check_token("--token", token)}
    except LookupRefused as exc:
        fail(str(exc), 2)


@audit_app.command("lookups")
def audit_lookups(
    nhs_number: Annotated[str | None, typer.Option(
        "--nhs-number", help="only look-ups of this child (its tokens in every linkage domain); - reads it "
                             "from standard input")] = None,
    token: Annotated[str | None, typer.Option("--token", help="only look-ups that asked about this token")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the look-ups as JSON lines")] = False,
    extra: Annotated[list[str] | None, typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Who looked up a child's audit trail or chronology, when, under which login and why
    (oldest first): for a subject access request, and the IG lead's review of look-ups."""
    from bus.audit.chain import AuditStoreError
    from bus.audit.lookups import lookups_about, render

    _refuse_extra(extra)
    settings = load_settings()
    wanted: set[str] | None = None
    if nhs_number is not None or token is not None:
        wanted = _asked_tokens(settings, nhs_number, token,
                               lambda keyring, nhs: _tokens_in_every_domain(settings, keyring, nhs))
    try:
        rows = lookups_about(open_audit(settings).lookups(), wanted)
    except AuditStoreError as exc:
        fail(str(exc))
    _show(rows, as_json, render)


def _tokens_in_every_domain(settings: Settings, keyring: Keyring, nhs: str) -> set[str]:
    """The child's tokens as the audit holds them and as each linkage domain's partners hold them
    (a chronology is asked for with the MASH's token)."""
    from bus.audit.trail import subject_tokens
    from bus.exceptions import ConfigurationError
    from bus.policy.data import load_partnership
    from bus.pseudonymise.operators.token import tokens_for_all_keys

    tokens = subject_tokens(keyring, "nhs_number", nhs)
    try:
        domains = {p.linkage_domain for p in load_partnership(settings.policies_dir / "data").partners}
    except ConfigurationError as exc:
        fail(f"cannot read the partnership's linkage domains: {exc}")
    for domain in sorted(domains):
        tokens |= tokens_for_all_keys(keyring, domain, "nhs_number", nhs)
    return tokens


@audit_app.command("roles")
def audit_roles(
    apply: Annotated[bool, typer.Option(
        "--apply", help="run it against SGBUS_AUDIT_DSN (the tables' owner's login); "
                        "without it, print the SQL")] = False,
    prefix: Annotated[str, typer.Option(
        "--prefix", help="the group roles' names start with this (PostgreSQL roles are per server)")] = "sgbus",
    writer: Annotated[list[str] | None, typer.Option(
        "--writer", help="a login role to make an audit writer (the audit stage's); repeatable")] = None,
    register: Annotated[list[str] | None, typer.Option(
        "--register", help="a login role to make an event register writer (the ingest stage's); repeatable")] = None,
    reader: Annotated[list[str] | None, typer.Option(
        "--reader", help="a login role to make an audit reader (the gateway's, `audit verify`'s); "
                         "repeatable")] = None,
    recorder: Annotated[list[str] | None, typer.Option(
        "--recorder", help="a person's login role for `audit trail`, `chronology` and `audit lookups`: an audit "
                           "reader that also records its look-ups (one login per person); repeatable")] = None,
) -> None:
    """PostgreSQL audit store: a group role per component, each with only the rights its work
    needs, so that no worker's or gateway's login can change or remove an audit record. Create
    the login roles (with their passwords) yourself, then name them here."""
    from bus.audit.roles import AuditRoles, RolesError, member_statement
    from bus.audit.roles import apply as apply_roles

    try:
        roles = AuditRoles(prefix)
        members = {roles.writer: writer or [], roles.register: register or [],
                   roles.reader: [*(reader or []), *(r for r in recorder or [] if r not in (reader or []))],
                   roles.recorder: recorder or []}
        statements = roles.statements() + [member_statement(g, login) for g, logins in members.items()
                                           for login in logins]
    except RolesError as exc:
        fail(str(exc), 2)
    if not apply:
        from bus.audit.chain import schema_statements

        for statement in schema_statements() + statements:
            typer.echo(f"{statement};")
        return
    settings = load_settings()
    if settings.audit_dsn is None:
        fail("--apply needs SGBUS_AUDIT_DSN: the PostgreSQL audit store, as the tables' owner", 2)
    from bus.audit.chain import AuditStoreError

    try:
        apply_roles(settings.audit_dsn.get_secret_value(), roles, members)
    except (RolesError, AuditStoreError) as exc:
        fail(str(exc))
    typer.echo(f"audit store roles set: {roles.writer} (audit stage), {roles.register} (ingest stage), "
               f"{roles.reader} (gateway, audit verify and trail, replay), {roles.recorder} (a person's look-ups "
               "of a child)")
