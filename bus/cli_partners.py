"""`sgbus partners`: principals, ACLs and Kafka credentials derived from the partnership data."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bus.settings import Settings

partners_app = typer.Typer(help="Kafka principals, ACLs and credentials of the partnership's members.",
                           no_args_is_help=True)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _stack(settings: Settings):  # type: ignore[no-untyped-def]
    from bus.stack import Stack

    return Stack(settings.home, settings.policies_dir, progress=lambda m: typer.echo(m, err=True))


@partners_app.command("sync")
def partners_sync() -> None:
    """Re-apply topics, principals (SCRAM users) and ACLs after policies/data/partners.yaml or
    agreements change: new partners get credentials, removed ones lose them, ACLs match exactly."""
    from bus.policy.data import load_partnership
    from bus.topics import create_topics, topic_specs

    settings = Settings()
    stack = _stack(settings)
    partnership = load_partnership(settings.policies_dir / "data")
    created = create_topics(stack.access(), topic_specs(partnership))
    report = stack.sync_partners()
    typer.echo(f"{len(created)} topic(s) created; {report.summary()}")


@partners_app.command("principals")
def partners_principals(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List every principal and what it may do (derived from the partnership data)."""
    from bus.policy.data import load_partnership
    from bus.security.principals import principals

    settings = Settings()
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

    settings = Settings()
    partnership = load_partnership(settings.policies_dir / "data")
    partner = partnership.partner(partner_id)
    if partner is None:
        _fail(f"PARTNER_ID: no partner {partner_id!r} in {settings.policies_dir / 'data'}", 2)
        return
    name = publisher_name(partner_id) if publisher else partner_name(partner_id)
    stack = _stack(settings)
    try:
        if rotate:
            rotate_secret(stack.access(), settings.home, name)
            typer.echo(f"rotated the secret of {name}", err=True)
        access = stack.access(name)
    except SgbusError as exc:
        _fail(f"{exc} (run `sgbus partners sync` after adding a partner)")
        return
    extra: dict[str, Any] = (
        {"enable.idempotence": True, "acks": "all"} if publisher else
        {"group.id": partner_group_prefix(partner_id) + "consumer", "isolation.level": "read_committed",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    props = access.librdkafka(**extra)
    if as_json:
        typer.echo(json.dumps(props, indent=2))
        return
    topic = ingress_topic(partner.agency) if publisher else deliver_topic(partner_id)
    typer.echo(f"# {name}: {'write' if publisher else 'read'} {topic}"
               + ("" if publisher else f"; consumer groups must start with {partner_group_prefix(partner_id)}"))
    for key, value in props.items():
        typer.echo(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
