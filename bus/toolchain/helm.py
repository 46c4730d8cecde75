"""Helm, built once from the Go module proxy (module checksum pinned) and cached like OPA, for
`make deploy-check` (`helm lint`, `helm template`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bus.exceptions import ToolchainError
from bus.toolchain import Progress, _quiet, cache_dir, sha256_file

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
    home = cache_dir() / f"helm-{HELM_VERSION}"
    binary, stamp = home / "helm", home / "helm.sha256"
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_file(binary) \
            and _reports_version(binary):
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToolchainError("Go is not on PATH; it is needed once to build Helm")
    home.mkdir(parents=True, exist_ok=True)
    gobin = home / "bin.partial"
    shutil.rmtree(gobin, ignore_errors=True)
    env = {**os.environ, "GOBIN": str(gobin), "GOFLAGS": "-trimpath", "CGO_ENABLED": "0"}
    progress(f"building Helm {HELM_VERSION} from the Go module proxy (a few minutes, once) ...")
    proc = subprocess.run([go, "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise ToolchainError(f"go install {HELM_MODULE}/cmd/helm@{HELM_VERSION} failed:\n{tail}")
    info = subprocess.run([go, "mod", "download", "-json", f"{HELM_MODULE}@{HELM_VERSION}"],
                          capture_output=True, text=True, env=env, check=False)
    try:
        module_sum = json.loads(info.stdout).get("Sum")
    except json.JSONDecodeError:
        module_sum = None
    if module_sum != HELM_MODULE_SUM:
        raise ToolchainError(f"Helm module checksum {module_sum!r} does not match the pinned {HELM_MODULE_SUM}")
    built = gobin / "helm"
    if not _reports_version(built):
        raise ToolchainError(f"the built helm binary does not report version {HELM_VERSION}")
    built.replace(binary)
    shutil.rmtree(gobin, ignore_errors=True)
    stamp.write_text(sha256_file(binary) + "\n")
    progress(f"Helm {HELM_VERSION} built, module checksum verified, cached at {binary}")
    return binary
