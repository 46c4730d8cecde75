"""`sgbus deploy`: render what a platform team applies (Strimzi resources, the chart's files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bus.cli_common import err, fail, load_settings

deploy_app = typer.Typer(help="Kubernetes deployment: Strimzi resources and the Helm chart's generated files.",
                         no_args_is_help=True)


@deploy_app.command("render")
def deploy_render(
    repo: Annotated[Path, typer.Option(help="the sgbus checkout whose deploy/ to write")] = Path("."),
    namespace: Annotated[str, typer.Option(help="the Kubernetes namespace of the resources")] = "sgbus",
    check: Annotated[bool, typer.Option(
        "--check", help="write nothing; exit 1 naming every file that differs from what would be rendered")] = False,
) -> None:
    """Strimzi Kafka, KafkaNodePool, KafkaTopic and KafkaUser resources from policies/data (the
    same topics and ACLs as the local stack), and the rules and dashboards the chart ships."""
    from bus.deploy.render import drifted, rendered, write

    settings = load_settings()
    repo = repo.resolve()
    if not (repo / "deploy").is_dir():
        fail(f"no deploy/ directory under {repo}; run from the sgbus checkout or pass --repo")
    files = rendered(repo, settings.policies_dir, namespace)
    if check:
        stale = drifted(repo, files)
        if stale:
            fail("out of date with policies/data or deploy/ (run `sgbus deploy render`): " + ", ".join(stale))
        err(f"deploy/ is up to date ({len(files)} generated files)")
        return
    changed = write(repo, files)
    err(f"wrote {len(changed)} of {len(files)} generated files" + (": " + ", ".join(changed) if changed else ""))


@deploy_app.command("tools")
def deploy_tools() -> None:
    """Build (once, cached outside the repository) the pinned Helm that `make deploy-check` uses."""
    from bus.toolchain.helm import ensure_helm

    try:
        binary = ensure_helm(err)
    except Exception as exc:  # a build or checksum failure says what failed
        fail(str(exc))
    err(f"helm: {binary}")


@deploy_app.command("compose-pki")
def deploy_compose_pki(
    out: Annotated[Path, typer.Option(help="where deploy/compose/compose.yaml mounts it from")] = Path(
        "deploy/compose/pki"),
) -> None:
    """The evaluation cluster's node certificate (issued by this home's partnership CA for
    kafka-1..3 and localhost), the CA, and compose.env (cluster id, admin SCRAM password)."""
    from bus.deploy.compose import write_pki

    written = write_pki(load_settings().home, out)
    err(f"wrote {', '.join(str(p) for p in written)} (private; git-ignored)")
