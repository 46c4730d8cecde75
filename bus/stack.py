"""The local stack: start, check and stop a single-node KRaft Kafka and an OPA server.

State (ports, pids, data, logs) lives under `$SGBUS_HOME` (default `.sgbus/`). `up` records
what it started and `down` stops exactly those processes, by pid, after checking that each
pid still runs the command line `up` gave it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from bus import toolchain
from bus.audit.signer import ensure_audit_signer
from bus.exceptions import StackError, ToolchainError
from bus.ops import monitoring, targets, web_auth
from bus.ops.serve import ensure_local_metrics_pki
from bus.policy.bundle import SIGNING_ALG, Bundle, build_bundle, ensure_policy_key
from bus.policy.data import load_partnership
from bus.provenance.registry import LocalSigners
from bus.security import opa_auth
from bus.security.credentials import CredentialStore
from bus.security.files import private_dir, restrict_umask, write_private
from bus.security.kafka_access import KafkaAccess, local_access
from bus.security.kafka_admin import SyncReport, scram_users, sync_principals, upsert_scram
from bus.security.pki import LOCAL_HOSTS, Issued, PartnershipCA, ca_path, client_context
from bus.security.principals import ADMIN
from bus.toolchain.monitoring import ensure_jmx_exporter, ensure_prometheus
from bus.topics import create_topics, topic_specs

Progress = Callable[[str], None]
KAFKA_HEAP = ("-Xms256m", "-Xmx512m")
READY_TIMEOUT_S = 120.0


def _quiet(_msg: str) -> None:
    return None


def free_port(preferred: int | None = None) -> int:
    """A free 127.0.0.1 port: `preferred` if it is free, else one the OS picks."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As Kafka and OPA do: a port whose old connections are in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise StackError("no free port on 127.0.0.1")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def process_alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (guards against pid reuse)."""
    if not pid:
        return False
    if _is_zombie(pid):
        _reap(pid)
        return False
    return marker in _cmdline(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process(pid: int, marker: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM, wait, then SIGKILL; returns True if it was running."""
    if not process_alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid, marker):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while process_alive(pid, marker):
        _reap(pid)
        time.sleep(0.05)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def new_cluster_id() -> str:
    """A KRaft cluster id (URL-safe base64 of a UUID) that does not start with '-' or '_':
    Kafka's argument parser would read a leading '-' as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id[0].isalnum():
            return cluster_id


@dataclass
class Stack:
    """The local Kafka + OPA, as started by `sgbus stack up` and by the test fixtures."""

    home: Path
    policies_dir: Path
    progress: Progress = _quiet

    def __post_init__(self) -> None:
        # Everything the stack and the processes it starts write is private (0600/0700).
        restrict_umask()
        self.home = self.home.resolve()
        self.policies_dir = self.policies_dir.resolve()

    # -- state -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        private_dir(self.home)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _update(self, service: str, info: dict[str, Any] | None) -> None:
        state = self._read_state()
        if info is None:
            state.pop(service, None)
        else:
            state[service] = info
            # Ports outlive a stop so a restarted service comes back where clients expect it.
            ports = state.setdefault("ports", {})
            for key in ("port", "controller_port", "internal_port", "jmx_port"):
                if key in info:
                    ports[f"{service}_{key}"] = info[key]
        self._write_state(state)

    def _previous_port(self, name: str) -> int | None:
        port = self._read_state().get("ports", {}).get(name)
        return int(port) if port else None

    def status(self) -> dict[str, Any]:
        state = self._read_state()
        out: dict[str, Any] = {"home": str(self.home)}
        for name in ("kafka", "opa", "prometheus", "alertmanager"):
            info = state.get(name)
            if info:
                out[name] = {**info, "alive": process_alive(info.get("pid"), info.get("marker", "?"))}
            else:
                out[name] = {"alive": False}
        out["running"] = out["kafka"]["alive"] and out["opa"]["alive"]
        out["kafka_bootstrap"] = f"127.0.0.1:{out['kafka']['port']}" if out["kafka"]["alive"] else None
        out["opa_url"] = f"https://127.0.0.1:{out['opa']['port']}" if out["opa"]["alive"] else None
        out["prometheus_url"] = (f"https://127.0.0.1:{out['prometheus']['port']}"
                                 if out["prometheus"]["alive"] else None)
        out["alertmanager_url"] = (f"https://127.0.0.1:{out['alertmanager']['port']}"
                                   if out["alertmanager"]["alive"] else None)
        out["monitoring_auth"] = f"TLS, operator login ({web_auth.OPERATOR}; $SGBUS_HOME/credentials/)"
        out["kafka_security"] = "SASL_SSL (SCRAM-SHA-512), ACLs required"
        out["kafka_ca"] = str(ca_path(self.home))
        out["opa_auth"] = "TLS, bearer token per role, system.authz"
        return out

    # -- security ----------------------------------------------------------------------
    NODE = "sgbus-node-1"
    OPA = "sgbus-opa"
    PROMETHEUS = "sgbus-prometheus"
    ALERTMANAGER = "sgbus-alertmanager"

    def _node_cert(self) -> Issued:
        ca = PartnershipCA(self.home).ensure()
        return ca.issued(self.NODE) or ca.issue(self.NODE, server=True, client=True, hosts=LOCAL_HOSTS)

    def _node_client(self, info: dict[str, Any]) -> dict[str, Any]:
        """librdkafka properties for the node's own certificate on the INTERNAL (mutual TLS)
        listener: how the stack creates the admin's SCRAM user on a fresh broker."""
        node = self._node_cert()
        return {"bootstrap.servers": f"127.0.0.1:{info['internal_port']}", "security.protocol": "SSL",
                "ssl.ca.location": str(node.ca), "ssl.certificate.location": str(node.cert),
                "ssl.key.location": str(node.key), "log_level": 0}

    def access(self, principal: str = ADMIN) -> KafkaAccess:
        """Client access to the running broker as one of the stack's principals."""
        bootstrap = self.status()["kafka_bootstrap"]
        if bootstrap is None:
            raise StackError(f"Kafka is not running under {self.home}; run `sgbus stack up`")
        return local_access(self.home, bootstrap, principal)

    def opa_access(self, role: opa_auth.OpaRole) -> opa_auth.OpaAccess:
        """Client access to the running OPA with the token of `role`."""
        url = self.status()["opa_url"]
        if url is None:
            raise StackError(f"OPA is not running under {self.home}; run `sgbus stack up`")
        return opa_auth.OpaAccess(url, opa_auth.local_token(self.home, role), ca_path(self.home))

    def sync_partners(self) -> SyncReport:
        """Principals, SCRAM users and ACLs for the partnership data now in policies/data."""
        partnership = load_partnership(self.policies_dir / "data")
        return sync_principals(self.access(), partnership, self.home)

    # -- Kafka -------------------------------------------------------------------------
    def start_kafka(self) -> dict[str, Any]:
        libs = toolchain.ensure_kafka(self.progress)
        kdir = self.home / "kafka"
        data = kdir / "data"
        kdir.mkdir(parents=True, exist_ok=True)
        port = free_port(self._previous_port("kafka_port"))
        cport = free_port(self._previous_port("kafka_controller_port"))
        while cport == port:
            cport = free_port()
        iport = free_port(self._previous_port("kafka_internal_port"))
        while iport in (port, cport):
            iport = free_port()
        jport = free_port(self._previous_port("kafka_jmx_port"))
        while jport in (port, cport, iport):
            jport = free_port()
        jmx_config = monitoring.write_yaml(kdir / "jmx-exporter.yaml", monitoring.JMX_EXPORTER_CONFIG)
        agent = f"-javaagent:{ensure_jmx_exporter(self.progress)}=127.0.0.1:{jport}:{jmx_config}"
        node = self._node_cert()
        props = kdir / "server.properties"
        template = resources.files("bus.toolchain").joinpath("kafka-server.properties").read_text()
        props.write_text(
            template.replace("@PORT@", str(port)).replace("@CONTROLLER_PORT@", str(cport))
            .replace("@INTERNAL_PORT@", str(iport)).replace("@DATA_DIR@", str(data))
            .replace("@KEYSTORE@", str(node.keystore)).replace("@TRUSTSTORE@", str(node.ca))
            .replace("@NODE_PRINCIPAL@", f"CN={self.NODE},O=sgbus partnership")
        )
        log4j = kdir / "log4j2.properties"
        log4j.write_text(resources.files("bus.toolchain").joinpath("kafka-log4j2.properties").read_text())
        log = kdir / "server.log"
        java = toolchain.java_binary()
        classpath = ":".join(str(p) for p in sorted(libs.glob("*.jar")))
        jvm = [java, *KAFKA_HEAP, "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", f"-Dsgbus.kafka.log={log}", "-cp", classpath]
        if not (data / "meta.properties").is_file():
            cluster_id = new_cluster_id()
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        stdout = (kdir / "stdout.log").open("ab")
        proc = subprocess.Popen(
            [*jvm[:1], agent, *jvm[1:], "kafka.Kafka", str(props)], stdout=stdout, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=kdir,
        )
        stdout.close()
        info = {"pid": proc.pid, "port": port, "controller_port": cport, "internal_port": iport,
                "jmx_port": jport, "marker": str(props),
                "data_dir": str(data), "log": str(log), "version": toolchain.KAFKA_VERSION}
        self._update("kafka", info)
        self._wait_kafka(info)
        self._ensure_admin(info)
        return info

    def _ensure_admin(self, info: dict[str, Any]) -> None:
        """The admin principal's SCRAM user, created through the node's own mTLS identity (so
        its secret never appears on a command line) whenever the broker lacks it."""
        from confluent_kafka.admin import AdminClient

        cred, _ = CredentialStore(self.home).ensure(ADMIN)
        admin = AdminClient(self._node_client(info))
        if ADMIN not in scram_users(admin):
            upsert_scram(admin, cred.username, cred.password)

    def _wait_kafka(self, info: dict[str, Any]) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self._node_client(info))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not process_alive(info["pid"], info["marker"]):
                raise StackError(f"Kafka exited during start; log {info['log']}:\n{_tail(Path(info['log']))}")
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception:  # not ready yet
                time.sleep(0.2)
        raise StackError(f"Kafka did not become ready in {READY_TIMEOUT_S:.0f}s; log {info['log']}")

    def stop_kafka(self) -> bool:
        info = self._read_state().get("kafka")
        if not info:
            return False
        stopped = stop_process(info["pid"], info["marker"])
        self._update("kafka", None)
        return stopped

    # -- OPA ---------------------------------------------------------------------------
    def build_policy_bundle(self, policies_dir: Path | None = None) -> Bundle:
        """The signed bundle of `policies_dir` (default: the stack's), ready for OPA."""
        return build_bundle(policies_dir or self.policies_dir, self.home / "opa" / "policies.tar.gz",
                            ensure_policy_key(self.home), opa_auth.token_hashes(self.home),
                            signers=LocalSigners(self.home).registry())

    def opa_command(self, port: int, config: Path, bundle: Path) -> list[str]:
        """`opa run` as the stack starts it: HTTPS, token authentication, the system.authz
        policy, and only the bundle signed with the partnership's policy key."""
        opa = toolchain.ensure_opa(self.progress)
        ca = PartnershipCA(self.home).ensure()
        cert = ca.issued(self.OPA) or ca.issue(self.OPA, server=True, client=False, hosts=LOCAL_HOSTS)
        return [str(opa.path), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error",
                "--config-file", str(config), "--authentication=token", "--authorization=basic",
                "--tls-cert-file", str(cert.cert), "--tls-private-key-file", str(cert.key),
                "--bundle", "--verification-key", str(ensure_policy_key(self.home).public),
                "--signing-alg", SIGNING_ALG, str(bundle)]

    def start_opa(self, bundle: Bundle | None = None) -> dict[str, Any]:
        toolchain.ensure_opa(self.progress)
        odir = private_dir(self.home / "opa")
        bundle = bundle or self.build_policy_bundle()
        port = free_port(self._previous_port("opa_port"))
        config = odir / "config.yaml"
        config.write_text("labels:\n  app: sgbus\ndecision_logs:\n  console: false\n")
        log = odir / "opa.log"
        out = log.open("ab")
        proc = subprocess.Popen(
            self.opa_command(port, config, bundle.path),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=odir,
        )
        out.close()
        info = {"pid": proc.pid, "port": port, "marker": str(config), "log": str(log),
                "version": toolchain.OPA_VERSION, "revision": bundle.revision}
        self._update("opa", info)
        self._wait_opa(info)
        return info

    def reload_policies(self, policies_dir: Path | None = None) -> str:
        """Build and sign the bundle of `policies_dir`, then restart OPA with it (signatures
        are checked only when OPA loads a bundle, so a reload is a restart; workers hold their
        batches meanwhile and carry on). A bundle that does not build leaves OPA as it was."""
        bundle = self.build_policy_bundle(policies_dir)
        self.stop_opa()
        return str(self.start_opa(bundle)["revision"])

    def _wait_opa(self, info: dict[str, Any]) -> None:
        url = f"https://127.0.0.1:{info['port']}/health"
        tls = client_context(ca_path(self.home))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not process_alive(info["pid"], info["marker"]):
                raise StackError(f"OPA exited during start; log {info['log']}:\n{_tail(Path(info['log']))}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=tls) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise StackError(f"OPA did not become healthy in {READY_TIMEOUT_S:.0f}s; log {info['log']}")

    def stop_opa(self) -> bool:
        info = self._read_state().get("opa")
        if not info:
            return False
        stopped = stop_process(info["pid"], info["marker"])
        self._update("opa", None)
        return stopped

    # -- Prometheus and Alertmanager -----------------------------------------------------
    def monitoring_access(self) -> web_auth.MonitoringAccess:
        """The operator's login to the local Prometheus and Alertmanager (HTTPS, partnership CA)."""
        return web_auth.local_access(self.home)

    def _web_config(self, directory: Path, name: str) -> Path:
        cert = web_auth.server_cert(self.home, name)
        return monitoring.write_yaml(directory / "web.yml", web_auth.web_config(cert, self.monitoring_access()))

    def start_alertmanager(self) -> dict[str, Any]:
        binaries = ensure_prometheus(self.progress)
        adir = private_dir(self.home / "alertmanager")
        port = free_port(self._previous_port("alertmanager_port"))
        config = monitoring.write_yaml(adir / "alertmanager.yml", monitoring.alertmanager_config())
        log = adir / "alertmanager.log"
        web = self._web_config(adir, self.ALERTMANAGER)
        cmd = [str(binaries.alertmanager), f"--config.file={config}", f"--storage.path={adir / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}",
               "--cluster.listen-address=", "--log.level=warn"]
        proc, info = self._spawn(cmd, adir, log, port, str(config))
        self._update("alertmanager", info)
        self._wait_http(proc, info, f"https://127.0.0.1:{port}/-/ready", "Alertmanager")
        return info

    def write_prometheus_config(self) -> Path:
        """prometheus.yml for what runs now (OPA's, Kafka's and Alertmanager's ports are read from the state)."""
        state = self._read_state()
        pdir = private_dir(self.home / "prometheus")
        private_dir(targets.targets_dir(self.home))
        token_file = write_private(pdir / "opa-metrics.token", opa_auth.local_token(self.home, "metrics"))
        access = self.monitoring_access()
        password_file = write_private(pdir / "operator.password", access.password)
        ports = state.get("ports", {})
        doc = monitoring.prometheus_config(
            targets_dir=targets.targets_dir(self.home),
            alertmanager_port=int(ports.get("alertmanager_port", 9093)),
            opa_port=ports.get("opa_port"), opa_token_file=token_file, ca_file=ca_path(self.home),
            jmx_port=ports.get("kafka_jmx_port"), prometheus_port=int(ports.get("prometheus_port", 9090)),
            self_auth=web_auth.scrape_auth(access, password_file, ca_path(self.home)),
            scraper=ensure_local_metrics_pki(self.home)[1])
        return monitoring.write_yaml(pdir / "prometheus.yml", doc)

    def start_prometheus(self) -> dict[str, Any]:
        binaries = ensure_prometheus(self.progress)
        pdir = private_dir(self.home / "prometheus")
        port = free_port(self._previous_port("prometheus_port"))
        state = self._read_state()
        state.setdefault("ports", {})["prometheus_port"] = port
        self._write_state(state)
        config = self.write_prometheus_config()
        targets.prune(self.home)
        log = pdir / "prometheus.log"
        # No --web.enable-lifecycle: a reload is SIGHUP from whoever owns the process, not an HTTP call.
        cmd = [str(binaries.prometheus), f"--config.file={config}", f"--storage.tsdb.path={pdir / 'data'}",
               "--storage.tsdb.retention.time=7d", f"--web.listen-address=127.0.0.1:{port}",
               f"--web.config.file={self._web_config(pdir, self.PROMETHEUS)}", "--log.level=warn"]
        proc, info = self._spawn(cmd, pdir, log, port, str(config))
        self._update("prometheus", info)
        self._wait_http(proc, info, f"https://127.0.0.1:{port}/-/ready", "Prometheus")
        return info

    def _spawn(self, cmd: list[str], cwd: Path, log: Path, port: int, marker: str,
               ) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        out = log.open("ab")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd)
        out.close()
        return proc, {"pid": proc.pid, "port": port, "marker": marker, "log": str(log)}

    def _wait_http(self, proc: subprocess.Popen[bytes], info: dict[str, Any], url: str, name: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.monitoring_access().client(timeout_s=2.0) as client:
            while time.monotonic() < deadline:
                # The child's own exit status, not /proc: right after the exec its command line can read empty.
                if proc.poll() is not None:
                    raise StackError(f"{name} exited during start; log {info['log']}:\n{_tail(Path(info['log']))}")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise StackError(f"{name} did not become ready in {READY_TIMEOUT_S:.0f}s; log {info['log']}")

    def reload_prometheus(self) -> None:
        """Rewrite prometheus.yml (OPA or Kafka came back on another port) and have Prometheus re-read it."""
        info = self._read_state().get("prometheus")
        if not info or not process_alive(info["pid"], info["marker"]):
            return
        self.write_prometheus_config()
        os.kill(info["pid"], signal.SIGHUP)

    def stop_service(self, name: str) -> bool:
        """Stop one service `up` started (kafka, opa, prometheus, alertmanager), by recorded pid."""
        info = self._read_state().get(name)
        if not info:
            return False
        stopped = stop_process(info["pid"], info["marker"])
        self._update(name, None)
        return stopped

    # -- whole stack -------------------------------------------------------------------
    def up(self) -> tuple[dict[str, Any], list[str]]:
        """Start whatever is not running; returns (status, names of services started)."""
        toolchain.ensure_all(self.progress)
        status = self.status()
        started: list[str] = []
        partnership = load_partnership(self.policies_dir / "data")
        # The local stack's publishers sign with keys it issues (one per source organisation);
        # a partner's own deployment gets its key from `sgbus partners keys issue`.
        new_keys = LocalSigners(self.home).ensure_publishers((p.agency, p.org_id) for p in partnership.partners)
        if new_keys:
            self.progress(f"issued {len(new_keys)} publisher signing keys")
        if ensure_audit_signer(self.home)[1]:
            self.progress("created the audit signing key (audit-signing/)")
        # The certificates sgbus processes serve /metrics with and Prometheus scrapes them with.
        ensure_local_metrics_pki(self.home)
        if status["opa"]["alive"] and new_keys:
            self.reload_policies()
        if not status["kafka"]["alive"]:
            self.progress("starting Kafka ...")
            self.start_kafka()
            started.append("kafka")
        if not status["opa"]["alive"]:
            self.progress("starting OPA ...")
            self.start_opa()
            started.append("opa")
        created = create_topics(self.access(), topic_specs(partnership))
        if created:
            self.progress(f"created {len(created)} topics")
        report = sync_principals(self.access(), partnership, self.home)
        if report.users_created or report.users_removed or report.acls_created or report.acls_removed:
            self.progress(f"principals: {report.summary()}")
        started += self._up_monitoring(status, restarted=bool(started))
        return self.status(), started

    def _up_monitoring(self, status: dict[str, Any], *, restarted: bool) -> list[str]:
        """Alertmanager, then Prometheus. Last, and not fatal: the bus shares without them (and
        the operator is told); they need Debian's packages, which not every host can fetch."""
        started = []
        try:
            if not status["alertmanager"]["alive"]:
                self.progress("starting Alertmanager ...")
                self.start_alertmanager()
                started.append("alertmanager")
            if not status["prometheus"]["alive"]:
                self.progress("starting Prometheus ...")
                self.start_prometheus()
                started.append("prometheus")
            elif restarted:
                self.reload_prometheus()
        except (StackError, ToolchainError) as exc:
            self.progress(f"WARNING: monitoring not started, the bus runs without it: {exc}")
        return started

    def down(self) -> list[str]:
        """Stop what `up` started (by recorded pid); returns the names stopped."""
        stopped = [name for name in ("prometheus", "alertmanager") if self.stop_service(name)]
        if self.stop_opa():
            stopped.append("opa")
        if self.stop_kafka():
            stopped.append("kafka")
        return stopped


def read_endpoints(home: Path) -> tuple[str | None, str | None]:
    """(kafka_bootstrap, opa_url) of a running local stack under `home`, else Nones."""
    status = Stack(home, Path("policies")).status()
    return status["kafka_bootstrap"], status["opa_url"]
