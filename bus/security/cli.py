"""`sgbus partners`: principals, ACLs, Kafka credentials and signing keys of the partnership's members."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.cli_common import fail, load_settings, local_stack
from bus.settings import Settings

partners_app = typer.Typer(help="Kafka principals, ACLs and credentials of the partnership's members.",
                           no_args_is_help=True)


@partners_app.command("sync")
def partners_sync() -> None:
    """Re-apply topics, principals (SCRAM users) and ACLs after policies/data/partners.yaml or
    agreements change: new partners get credentials, removed ones lose them, ACLs match exactly."""
    from bus.policy.data import load_partnership
    from bus.topics import check_partition_counts, create_topics, topic_specs

    settings = load_settings()
    stack = local_stack(settings)
    partnership = load_partnership(settings.policies_dir / "data")
    created = create_topics(stack.access(), topic_specs(partnership))
    report = stack.sync_partners()
    typer.echo(f"{len(created)} topic(s) created; {report.summary()}")
    check_partition_counts(stack.access(), topic_specs(partnership))  # after the ACLs: access is taken away first
    # A removed partner's gateway certificates go too: the gateway would otherwise still hand it
    # the deliveries left on its topic.
    from bus.gateway.identity import PartnerCerts

    ids = {p.id for p in partnership.partners}
    certs = PartnerCerts(settings.home, settings.gateway_partner_certs)
    gone = sorted({c.partner for c in certs.all() if c.partner not in ids and not c.revoked})
    for partner in gone:
        certs.revoke(partner)
    if gone:
        typer.echo(f"revoked the gateway certificates of {len(gone)} partner(s) no longer in the data: "
                   + ", ".join(gone))
    # And OPA's copy of the partnership: until it is rebuilt, policy still shares with a removed
    # partner, and its keys (a declarer's among them) still count.
    _reload_if_running(settings)


@partners_app.command("principals")
def partners_principals(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List every principal and what it may do (derived from the partnership data)."""
    from bus.policy.data import load_partnership
    from bus.security.principals import principals

    settings = load_settings()
    rows: list[dict[str, Any]] = [{"principal": p.name, "role": p.role, "partner": p.partner_id,
             "grants": [f"{g.operation} {g.resource} {g.name}{'*' if g.pattern == 'prefixed' else ''}"
                        for g in sorted(p.grants)] or ["everything (super user)"]}
            for p in principals(load_partnership(settings.policies_dir / "data"))]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['principal']} ({row['role']}): " + "; ".join(row["grants"]))


@partners_app.command("credentials")
def partners_credentials(
    partner_id: Annotated[str, typer.Argument(help="partner id from policies/data/partners.yaml")],
    publisher: Annotated[bool, typer.Option(
        "--publisher", help="the partner's publisher (writes its agency's ingress topic) instead of its consumer")
    ] = False,
    rotate: Annotated[bool, typer.Option(help="replace the secret first (the old one stops working)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print librdkafka properties as JSON")] = False,
) -> None:
    """librdkafka client properties for PARTNER_ID's own Kafka client: what its IT team pastes
    into a consumer (reads only sg.deliver.PARTNER_ID) or, with --publisher, a producer."""
    from bus.exceptions import SgbusError
    from bus.policy.data import load_partnership
    from bus.security.kafka_admin import rotate as rotate_secret
    from bus.security.principals import partner_group_prefix, partner_name, publisher_name
    from bus.topics import deliver_topic, ingress_topic

    settings = load_settings()
    partnership = load_partnership(settings.policies_dir / "data")
    partner = partnership.partner(partner_id)
    if partner is None:
        fail(f"PARTNER_ID: no partner {partner_id!r} in {settings.policies_dir / 'data'}", 2)
        return
    name = publisher_name(partner_id) if publisher else partner_name(partner_id)
    stack = local_stack(settings)
    try:
        if rotate:
            rotate_secret(stack.access(), settings.home, name)
            typer.echo(f"rotated the secret of {name}", err=True)
        access = stack.access(name)
    except SgbusError as exc:
        fail(f"{exc} (run `sgbus partners sync` after adding a partner)")
        return
    extra: dict[str, Any] = (
        {"enable.idempotence": True, "acks": "all"} if publisher else
        {"group.id": partner_group_prefix(partner_id) + "consumer", "isolation.level": "read_committed",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    props = access.librdkafka_producer(**extra) if publisher else access.librdkafka(**extra)
    if as_json:
        typer.echo(json.dumps(props, indent=2))
        return
    topic = ingress_topic(partner.agency) if publisher else deliver_topic(partner_id)
    typer.echo(f"# {name}: {'write' if publisher else 'read'} {topic}"
               + ("" if publisher else f"; consumer groups must start with {partner_group_prefix(partner_id)}"))
    for key, value in props.items():
        typer.echo(f"{key}={str(value).lower() if isinstance(value, bool) else value}")


keys_app = typer.Typer(help="Signing keys: each source organisation's (events) and named roles' (overrides).",
                       no_args_is_help=True)
partners_app.add_typer(keys_app, name="keys")


def _reload_if_running(settings: Settings) -> None:
    """The register travels in the signed policy bundle: rebuild it if the local OPA runs."""
    stack = local_stack(settings)
    if settings.opa_url is None and stack.status()["opa"]["alive"]:
        revision = stack.reload_policies()
        typer.echo(f"policy bundle rebuilt with the new register (revision {revision})", err=True)
    else:
        typer.echo("run `sgbus policy reload` (or rebuild the partnership's bundle) so workers see it", err=True)


@keys_app.command("issue")
def keys_issue(
    org: Annotated[str, typer.Argument(help="the organisation's source.org_id (or its partner id)")],
    role: Annotated[str | None, typer.Option(
        "--role", help="issue a declarer key for this named role (e.g. 'duty inspector') held at ORG, "
                       "for emergency override declarations, instead of the organisation's event key")] = None,
    replace: Annotated[bool, typer.Option(help="revoke the organisation's earlier event keys")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="write the private key file here (0600), to hand to the publisher's system, instead of "
                      "keeping it in $SGBUS_HOME/signing (the local stack's own publishers)")] = None,
) -> None:
    """Issue an Ed25519 signing key: the public key is registered in the partnership's signing
    key register (bundled and signed with the policies), the private key stays with the
    publisher (or declarer). Events claiming ORG must be signed with one of its keys."""
    from bus.exceptions import ConfigurationError
    from bus.policy.data import load_partnership
    from bus.provenance.registry import LocalSigners
    from bus.security.files import write_private

    settings = load_settings()
    partnership = load_partnership(settings.policies_dir / "data")
    partner = partnership.partner(org) or next((p for p in partnership.partners if p.org_id == org), None)
    if partner is None:
        fail(f"ORG: no partner has id or org_id {org!r} in {settings.policies_dir / 'data'}", 2)
        return
    signers = LocalSigners(settings.home)
    try:
        if role is not None:
            declarer = signers.issue_declarer(role, partner.id)
            kid, what = declarer.kid, f"declarer key {declarer.kid} for role {role!r} at {partner.id}"
        else:
            entry = signers.issue_publisher(partner.agency, partner.org_id, replace=replace)
            kid, what = entry.kid, f"signing key {entry.kid} for {partner.agency.value} organisation {partner.org_id}"
    except ConfigurationError as exc:
        fail(str(exc))
        return
    typer.echo(f"issued {what}")
    if out is not None:
        # Moved, not copied: the bus host keeps no private key of a publisher it does not run.
        kept = signers.private_dir / f"{kid}.json"
        write_private(out, kept.read_bytes())
        kept.unlink()
        typer.echo(f"private key written to {out} (0600) and not kept here; give it to that system only")
    _reload_if_running(settings)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="print the register as JSON")] = False) -> None:
    """The signing key register (public keys only): what recipients verify signatures with."""
    from bus.provenance.registry import LocalSigners

    reg = LocalSigners(load_settings().home).registry()
    if as_json:
        typer.echo(reg.model_dump_json(indent=2))
        return
    for k in reg.publishers:
        typer.echo(f"{k.kid}  publisher  {k.agency.value}/{k.org_id}  issued {k.issued_at}")
    for d in reg.declarers:
        typer.echo(f"{d.kid}  declarer   {d.role!r} at {d.partner}  issued {d.issued_at}")
    if not reg.publishers and not reg.declarers:
        typer.echo("no signing keys registered (`sgbus stack up` issues the local publishers' keys)")


@keys_app.command("revoke")
def keys_revoke(kid: Annotated[str, typer.Argument(help="key id from `sgbus partners keys list`")]) -> None:
    """Remove a key from the register: events (or declarations) signed with it are refused."""
    from bus.provenance.registry import LocalSigners

    settings = load_settings()
    if not LocalSigners(settings.home).revoke(kid):
        fail(f"KID: no key {kid!r} in the register", 2)
    typer.echo(f"revoked {kid}")
    _reload_if_running(settings)


certs_app = typer.Typer(help="Client certificates of partners' systems for the HTTPS gateway.", no_args_is_help=True)
partners_app.add_typer(certs_app, name="certs")


@certs_app.command("issue")
def certs_issue(
    partner_id: Annotated[str, typer.Argument(help="partner id from policies/data/partners.yaml")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="write client.key, client.pem and ca.pem into this directory (0600/0700) for the partner's "
                      "system, and keep no copy of the key here")] = None,
) -> None:
    """Issue a gateway client certificate for PARTNER_ID's system from the partnership CA and
    register it: requests made with it act as that partner, and as nobody else."""
    from bus.gateway.identity import PartnerCerts
    from bus.policy.data import load_partnership

    settings = load_settings()
    if load_partnership(settings.policies_dir / "data").partner(partner_id) is None:
        fail(f"PARTNER_ID: no partner {partner_id!r} in {settings.policies_dir / 'data'}", 2)
    issued, entry = PartnerCerts(settings.home, settings.gateway_partner_certs).issue(partner_id, out)
    typer.echo(f"issued gateway certificate {entry.fingerprint[:16]}... for {partner_id} (valid to {entry.not_after})")
    typer.echo(f"key {issued.key}, certificate {issued.cert}, CA {issued.ca}")


@certs_app.command("list")
def certs_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Registered gateway client certificates (fingerprints only)."""
    from bus.gateway.identity import PartnerCerts

    settings = load_settings()
    certs = PartnerCerts(settings.home, settings.gateway_partner_certs).all()
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in certs], indent=2))
        return
    for c in certs:
        typer.echo(f"{c.fingerprint}  {c.partner:<24} issued {c.issued_at}  to {c.not_after}"
                   f"{'  REVOKED' if c.revoked else ''}")
    if not certs:
        typer.echo("no gateway certificates issued (`sgbus partners certs issue PARTNER_ID`)")


@certs_app.command("revoke")
def certs_revoke(
    which: Annotated[str, typer.Argument(help="a partner id (all its certificates) or one certificate's fingerprint")],
) -> None:
    """Revoke gateway certificates: the gateway refuses them from its next request on."""
    from bus.gateway.identity import PartnerCerts

    settings = load_settings()
    # The register the gateway reads (SGBUS_GATEWAY_PARTNER_CERTS), not only the home's copy:
    # revoking in a file the gateway never reads revoked nothing.
    register = PartnerCerts(settings.home, settings.gateway_partner_certs)
    try:
        revoked = register.revoke(which)
    except OSError as exc:
        fail(f"cannot change the certificate register {register.path} ({type(exc).__name__}); if the gateway "
             "reads it from a Kubernetes Secret, revoke in the register the Secret is made from and update it")
    if not revoked:
        fail(f"WHICH: no unrevoked certificate of partner or fingerprint {which!r}", 2)
    typer.echo(f"revoked {len(revoked)} certificate(s) in {register.path}; a gateway reading another copy "
               "(a Kubernetes Secret) refuses them once that copy is updated")
