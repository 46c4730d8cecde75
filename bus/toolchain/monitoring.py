"""Fetch, verify and cache Prometheus, Alertmanager (Debian's packages) and the JMX exporter agent."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bus.exceptions import ToolchainError
from bus.toolchain import Progress, _quiet, cache_dir, sha256_file

# Debian bookworm's packages, pinned by version and by the sha256 of the .deb: the binaries
# are static Go programs, so they are unpacked into the cache (no root, no system install).
DEBS = {
    "prometheus": ("2.42.0+ds-5+deb12u1", "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"),
    "prometheus-alertmanager": ("0.25.0-1+b4", "4fb9aed15cfe8e0c32408e643ab32a1e41ee87d2cc26f18aeba928b1b0b98ae7"),
}
PROMETHEUS_VERSION = "2.42.0"
JMX_EXPORTER_VERSION = "1.0.1"
JMX_EXPORTER_SHA256 = "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


@dataclass(frozen=True)
class MonitoringBinaries:
    prometheus: Path
    promtool: Path
    alertmanager: Path
    amtool: Path


def _binaries(root: Path) -> MonitoringBinaries:
    bin_dir = root / "usr" / "bin"
    return MonitoringBinaries(bin_dir / "prometheus", bin_dir / "promtool",
                              bin_dir / "prometheus-alertmanager", bin_dir / "amtool")


def _complete(b: MonitoringBinaries) -> bool:
    return all(p.is_file() for p in (b.prometheus, b.promtool, b.alertmanager, b.amtool))


def ensure_prometheus(progress: Progress = _quiet) -> MonitoringBinaries:
    """Prometheus, promtool, Alertmanager and amtool from the pinned Debian packages, fetched
    with `apt-get download` once, checked against their pinned sha256 and unpacked into the cache."""
    root = cache_dir() / f"prometheus-{PROMETHEUS_VERSION}"
    found = _binaries(root)
    if _complete(found):
        ensure_alertmanager_templates(found)
        return found
    apt = shutil.which("apt-get")
    dpkg = shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise ToolchainError(
            "apt-get/dpkg-deb not found: install Debian's packages "
            + " ".join(f"{name}={version}" for name, (version, _) in DEBS.items())
            + f" and unpack them into {root}"
        )
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="sgbus-deb-") as tmp:
        progress(f"fetching Debian's prometheus {DEBS['prometheus'][0]} and "
                 f"prometheus-alertmanager {DEBS['prometheus-alertmanager'][0]} ...")
        proc = subprocess.run([apt, "download", *(f"{n}={v}" for n, (v, _) in DEBS.items())],
                              cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ToolchainError("apt-get download failed:\n" + "\n".join(proc.stderr.splitlines()[-8:]))
        for name, (_version, digest) in DEBS.items():
            debs = list(Path(tmp).glob(f"{name}_*.deb"))
            if len(debs) != 1 or sha256_file(debs[0]) != digest:
                raise ToolchainError(f"{name}: the downloaded package does not match the pinned sha256 {digest}")
            subprocess.run([dpkg, "-x", str(debs[0]), str(staging)], check=True)
    if not _complete(_binaries(staging)):
        raise ToolchainError("the Prometheus packages did not contain prometheus, promtool, alertmanager, amtool")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    progress(f"Prometheus {PROMETHEUS_VERSION} and Alertmanager verified and cached in {root}")
    ensure_alertmanager_templates(_binaries(root))
    return _binaries(root)


#: where Debian's Alertmanager build reads its default notification templates (compiled in)
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager")


def ensure_alertmanager_templates(binaries: MonitoringBinaries) -> None:
    """Debian's Alertmanager loads its default templates from a fixed system path; put the
    package's own copies there when they are missing (what installing the package does)."""
    wanted = ("default.tmpl", "email.tmpl")
    if all((ALERTMANAGER_TEMPLATES / name).is_file() for name in wanted):
        return
    source = binaries.alertmanager.parents[2] / "usr" / "share" / "prometheus" / "alertmanager"
    try:
        ALERTMANAGER_TEMPLATES.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            shutil.copyfile(source / name, ALERTMANAGER_TEMPLATES / name)
    except OSError as exc:
        version = DEBS["prometheus-alertmanager"][0]
        raise ToolchainError(
            f"Alertmanager needs its templates in {ALERTMANAGER_TEMPLATES} ({exc}); install them with "
            f"`sudo apt-get install prometheus-alertmanager={version}` or copy {source}/*.tmpl there"
        ) from exc


def ensure_jmx_exporter(progress: Progress = _quiet) -> Path:
    """The Prometheus JMX exporter Java agent (Maven Central), checked against its pinned sha256."""
    name = f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar"
    jar = cache_dir() / "jmx-exporter" / name
    if jar.is_file() and sha256_file(jar) == JMX_EXPORTER_SHA256:
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    url = f"{MAVEN_CENTRAL}/io/prometheus/jmx/jmx_prometheus_javaagent/{JMX_EXPORTER_VERSION}/{name}"
    progress(f"fetching the JMX exporter {JMX_EXPORTER_VERSION} from Maven Central ...")
    partial = jar.with_suffix(".partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, partial.open("wb") as out:  # noqa: S310 - fixed https URL
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise ToolchainError(f"could not fetch {url}: {exc}") from exc
    if sha256_file(partial) != JMX_EXPORTER_SHA256:
        partial.unlink()
        raise ToolchainError(f"{name} does not match the pinned sha256 {JMX_EXPORTER_SHA256}")
    partial.replace(jar)
    return jar
