"""`sgbus deploy check` / `make deploy-check`: the chart linted and rendered by Helm, every core
Kubernetes object it renders validated offline (kubernetes-validate, strict), the Strimzi
resources validated against Strimzi's own CRD schemas (unknown fields rejected), no drift."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

#: the Kubernetes API the chart is checked against (kubernetes-validate's offline schemas)
K8S_VERSION = "1.33.0"
CHART = Path("deploy/helm/sgbus")
STRIMZI_SCHEMAS = Path("tests/data/strimzi/crd-schemas-1.2.0.json")
#: API groups of custom resources the chart uses; validated by their own checks, not the core schemas
CUSTOM_GROUPS = ("monitoring.coreos.com/",)


def helm(binary: Path, *args: str) -> str:
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def template(binary: Path, chart: Path, values: list[Path], release: str = "sgbus",
             namespace: str = "sgbus") -> list[dict[str, Any]]:
    """The objects `helm template` renders for `values` (in order)."""
    args = ["template", release, str(chart), "--namespace", namespace, "--kube-version", K8S_VERSION]
    for v in values:
        args += ["--values", str(v)]
    return [d for d in yaml.safe_load_all(helm(binary, *args)) if d]


def validate_core(docs: list[dict[str, Any]], version: str = K8S_VERSION) -> list[str]:
    """Problems of every core object (strict: unknown fields are errors), one line each."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        if doc.get("apiVersion", "").startswith(CUSTOM_GROUPS):
            continue
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: no schema ({exc})")
    return problems


def _closed(schema: Any) -> Any:
    """The schema with unknown properties rejected wherever Kubernetes would prune them."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def strimzi_validator(schemas_file: Path = STRIMZI_SCHEMAS) -> Callable[[dict[str, Any]], list[str]]:
    """A function giving the problems of one Strimzi resource against its CRD's v1 schema."""
    import jsonschema

    crds = json.loads(schemas_file.read_text())
    validators = {kind: jsonschema.Draft7Validator(_closed(copy.deepcopy(c["openAPIV3Schema"])))
                  for kind, c in crds.items()}
    versions = {kind: c["apiVersion"] for kind, c in crds.items()}

    def check(doc: dict[str, Any]) -> list[str]:
        kind = doc.get("kind", "?")
        name = f"{kind}/{doc.get('metadata', {}).get('name')}"
        if kind not in validators:
            return [f"{name}: not a Strimzi kind this check knows ({', '.join(sorted(validators))})"]
        if doc.get("apiVersion") != versions[kind]:
            return [f"{name}: apiVersion {doc.get('apiVersion')} (Strimzi serves {versions[kind]})"]
        return [f"{name}: {'.'.join(str(p) for p in e.path) or '$'}: {e.message}"
                for e in validators[kind].iter_errors(doc)]

    return check
