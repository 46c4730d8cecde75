"""Fetch, verify and cache the pinned Apache Kafka and Open Policy Agent the stack runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bus.exceptions import ToolchainError

KAFKA_VERSION = "4.4.0"
OPA_VERSION = "v1.22.3"
OPA_MODULE = "github.com/open-policy-agent/opa"
# go.sum-style hash of the OPA module zip at OPA_VERSION; checked after the build so a
# module proxy answer that differs from the one pinned here is refused.
OPA_MODULE_SUM = "h1:d46phjoHHFSl8F2bC8nT8wFxuGEvZRvs8FhYWFqsJ2w="

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def cache_dir() -> Path:
    """Where downloads and builds are cached: `$SGBUS_CACHE_DIR` or `~/.cache/sgbus`."""
    env = os.environ.get("SGBUS_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sgbus"
    base.mkdir(parents=True, exist_ok=True)
    return base


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lock_path() -> Path:
    return Path(str(resources.files("bus.toolchain").joinpath(f"kafka-{KAFKA_VERSION}.lock")))


def read_kafka_lock() -> dict[str, str]:
    """jar file name -> sha256, as committed in the lock file."""
    entries: dict[str, str] = {}
    for line in _lock_path().read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split()
        entries[name] = digest
    return entries


def _verify_jars(libs: Path, lock: dict[str, str]) -> list[str]:
    problems = []
    present = {p.name for p in libs.glob("*.jar")}
    for name, digest in sorted(lock.items()):
        if name not in present:
            problems.append(f"missing {name}")
        elif sha256_file(libs / name) != digest:
            problems.append(f"checksum mismatch {name}")
    problems.extend(f"unexpected {name}" for name in sorted(present - lock.keys()))
    return problems


def _resolve_kafka_jars(dest: Path, progress: Progress) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolchainError("Maven (mvn) is not on PATH; it is needed once to fetch Kafka")
    pom_text = (
        resources.files("bus.toolchain").joinpath("kafka-pom.xml").read_text()
        .replace("@KAFKA_VERSION@", KAFKA_VERSION)
    )
    with tempfile.TemporaryDirectory(prefix="sgbus-mvn-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(pom_text)
        progress(f"resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central ...")
        cmd = [
            mvn, "-q", "-B", "--strict-checksums",
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "-f", str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={dest}", "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise ToolchainError(f"Maven could not resolve Kafka {KAFKA_VERSION}:\n{tail}")


def ensure_kafka(progress: Progress = _quiet) -> Path:
    """Return the directory of verified Kafka broker jars, fetching them once if needed."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    lock = read_kafka_lock()
    if libs.is_dir() and not _verify_jars(libs, lock):
        return libs
    staging = libs.parent / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _resolve_kafka_jars(staging, progress)
    problems = _verify_jars(staging, lock)
    if problems:
        raise ToolchainError(
            "Kafka jars do not match the pinned checksums "
            f"(bus/toolchain/kafka-{KAFKA_VERSION}.lock): " + "; ".join(problems[:5])
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    progress(f"Kafka {KAFKA_VERSION}: {len(lock)} jars verified and cached in {libs}")
    return libs


def write_kafka_lock(progress: Progress = _quiet) -> Path:
    """Resolve the jars afresh and (re)write the lock file; for maintainers bumping Kafka."""
    with tempfile.TemporaryDirectory(prefix="sgbus-lock-") as tmp:
        _resolve_kafka_jars(Path(tmp), progress)
        lines = [f"# sha256 of every jar the Kafka {KAFKA_VERSION} broker runs with"]
        lines += [f"{sha256_file(p)}  {p.name}" for p in sorted(Path(tmp).glob("*.jar"))]
    path = _lock_path()
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class OpaBinary:
    path: Path
    version: str


def _opa_reports_version(binary: Path) -> bool:
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return False
    return f"Version: {OPA_VERSION.removeprefix('v')}" in out


def go_install_pinned(module: str, package: str, version: str, module_sum: str, home: Path, name: str,
                      built_ok: Callable[[Path], bool], progress: Progress) -> Path:
    """`go install package@version` into `home/name`: the Go checksum database verifies every
    module, the main module's h1: sum must equal `module_sum`, `built_ok` checks the binary; a
    stamp of its SHA-256 lets later calls trust the cached copy without rebuilding."""
    binary, stamp = home / name, home / f"{name}.sha256"
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_file(binary) \
            and built_ok(binary):
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(f"Go is not on PATH; it is needed once to build {name}")
    home.mkdir(parents=True, exist_ok=True)
    gobin = home / "bin.partial"
    shutil.rmtree(gobin, ignore_errors=True)
    env = {**os.environ, "GOBIN": str(gobin), "GOFLAGS": "-trimpath", "CGO_ENABLED": "0"}
    progress(f"building {name} {version} from the Go module proxy (a few minutes, once) ...")
    proc = subprocess.run([go, "install", f"{package}@{version}"], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise ToolchainError(f"go install {package}@{version} failed:\n{tail}")
    info = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                          env=env, check=False)
    try:
        got = json.loads(info.stdout).get("Sum")
    except json.JSONDecodeError:
        got = None
    if got != module_sum:
        raise ToolchainError(f"{name} module checksum {got!r} does not match the pinned {module_sum}")
    built = gobin / name
    if not built_ok(built):
        raise ToolchainError(f"the built {name} binary is not {module}@{version}")
    built.replace(binary)
    shutil.rmtree(gobin, ignore_errors=True)
    stamp.write_text(sha256_file(binary) + "\n")
    progress(f"{name} {version} built, module checksum verified, cached at {binary}")
    return binary


def ensure_opa(progress: Progress = _quiet) -> OpaBinary:
    """Return the pinned `opa` binary, building it once from the Go module proxy if needed."""
    binary = go_install_pinned(OPA_MODULE, OPA_MODULE, OPA_VERSION, OPA_MODULE_SUM, cache_dir() / f"opa-{OPA_VERSION}",
                               "opa", _opa_reports_version, progress)
    return OpaBinary(binary, OPA_VERSION)


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ToolchainError("no Java runtime found (java on PATH or JAVA_HOME); Kafka needs Java 17+")
    return java


def ensure_all(progress: Progress = _quiet) -> tuple[Path, OpaBinary]:
    return ensure_kafka(progress), ensure_opa(progress)
