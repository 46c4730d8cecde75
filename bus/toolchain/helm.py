"""Helm, built once from the Go module proxy (module checksum pinned) and cached like OPA, for
`make deploy-check` (`helm lint`, `helm template`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bus.toolchain import Progress, _quiet, cache_dir, go_install_pinned

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"
#: `go mod download -json helm.sh/helm/v3@v3.22.0` (the Go checksum database's h1: sum)
HELM_MODULE_SUM = "h1:n1if5iQgHYsujPAcO5oonH/KiSNUmqmUF0iGVjSF3AU="


def _reports_version(binary: Path) -> bool:
    """Built from the pinned module: `go version -m` reads the module path, version and h1: sum
    the Go toolchain embedded in the binary (a `go install` build reports only "v3.22" itself)."""
    go = shutil.which("go")
    try:
        if go is not None:
            info = subprocess.run([go, "version", "-m", str(binary)], capture_output=True, text=True, timeout=30,
                                  check=False).stdout
            return any(line.split() == ["mod", HELM_MODULE, HELM_VERSION, HELM_MODULE_SUM]
                       for line in info.splitlines())
        out = subprocess.run([str(binary), "version", "--template", "{{.Version}}"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except OSError:
        return False
    return HELM_VERSION.startswith(out.strip() or "?")


def ensure_helm(progress: Progress = _quiet) -> Path:
    """The pinned `helm` binary, built once (a few minutes) if the cache lacks it."""
    return go_install_pinned(HELM_MODULE, f"{HELM_MODULE}/cmd/helm", HELM_VERSION, HELM_MODULE_SUM,
                             cache_dir() / f"helm-{HELM_VERSION}", "helm", _reports_version, progress)
