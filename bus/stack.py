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
from concurrent.futures import ThreadPoolExecutor
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
from bus.topics import check_partition_counts, create_topics, topic_specs

Progress = Callable[[str], None]
KAFKA_HEAP = ("-Xms256m", "-Xmx512m")
#: The local stack's Kafka compiles with C1 only. C2's optimising compiler kept about half a core
#: busy for minutes after every start (JFR: "C2 CompilerThread0" at 0.5 of a core 2.5 min in, at
#: 50 events/s), on a 2-core machine shared with OPA and the workers. With C1 only, in two
#: `python -m bench core` runs each, the broker used 0.64-0.67 cores at 50 events/s against
#: 0.85-0.90, while latency and the ceiling stayed within this machine's noise (docs/BENCHMARKS.md,
#: session 15); short-lived stacks gain most: the broker-loss test (three brokers) took 182 s
#: against 338 s. A production broker (deploy/, Strimzi) keeps the JVM's default.
KAFKA_JIT = ("-XX:TieredStopAtLevel=1",)
#: ...and so the local broker prefers ChaCha20-Poly1305 for TLS. C1 has no intrinsics for AES-GCM:
#: a JFR profile of the broker at 200 events/s had 50% of its samples in pure-Java GHASH and AES
#: (the network thread, 66% of all samples, was mostly encryption). ChaCha20 is quick in plain Java.
#: In alternating runs at 200 events/s the broker used 0.68 and 0.68 cores against 0.80 and 0.77,
#: with p50 latency 403 and 392 ms against 687 and 505 ms (docs/BENCHMARKS.md, session 18). The
#: broker picks by its own order, so AES-GCM stays acceptable to a client that offers only that.
#: A production broker (deploy/) compiles with C2, whose AES intrinsics make AES-GCM the cheaper.
KAFKA_TLS_CIPHERS = (
    "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
)
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


def kafka_service(node: int) -> str:
    """The state entry (and directory) of a Kafka node: `kafka` for node 1, `kafka-N` after."""
    return "kafka" if node == 1 else f"kafka-{node}"


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
    #: KRaft nodes for a stack not yet started (1, or 3: each controller and broker); a started
    #: stack keeps the count it was formatted with (stack.json)
    brokers: int = 1

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
        nodes = []
        for node in range(1, int(state.get("kafka_nodes", 1)) + 1):
            info = state.get(kafka_service(node))
            if info:
                nodes.append({"node_id": node, "port": info["port"], "pid": info["pid"],
                              "alive": process_alive(info.get("pid"), info.get("marker", "?"))})
        out["kafka_nodes"] = nodes
        kafka_alive = any(n["alive"] for n in nodes)
        out["kafka"]["alive"] = kafka_alive  # the cluster answers while any node runs
        out["running"] = kafka_alive and out["opa"]["alive"]
        # Every node, so clients find the cluster whichever node is down.
        out["kafka_bootstrap"] = ",".join(f"127.0.0.1:{n['port']}" for n in nodes) if kafka_alive else None
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
    def _node_count(self) -> int:
        formatted = self._read_state().get("kafka_nodes")
        if formatted is None and (self._node_dir(1) / "data" / "meta.properties").is_file():
            formatted = 1  # a home formatted before multi-node stacks: one node
        if formatted is not None and int(formatted) != self.brokers and self.brokers != 1:
            raise StackError(f"this stack ({self.home}) was formatted with {formatted} Kafka node(s); "
                             f"`sgbus stack down` and remove {self.home}/kafka* to start {self.brokers}")
        return int(formatted) if formatted is not None else self.brokers

    def _kafka_ports(self, nodes: int) -> list[dict[str, int]]:
        """Client, controller, internal and JMX ports of every node (kept from a previous start)."""
        taken: set[int] = set()
        plan = []
        for node in range(1, nodes + 1):
            ports = {}
            for key in ("port", "controller_port", "internal_port", "jmx_port"):
                port = free_port(self._previous_port(f"{kafka_service(node)}_{key}"))
                while port in taken:
                    port = free_port()
                taken.add(port)
                ports[key] = port
            plan.append(ports)
        return plan

    def start_kafka(self) -> dict[str, Any]:
        """Start every KRaft node (formatting new ones with one cluster id); node 1's info."""
        libs = toolchain.ensure_kafka(self.progress)
        nodes = self._node_count()
        if nodes not in (1, 3):
            raise StackError(f"--brokers {nodes}: the local stack runs 1 or 3 Kafka nodes")
        plan = self._kafka_ports(nodes)
        voters = ",".join(f"{i}@127.0.0.1:{p['controller_port']}" for i, p in enumerate(plan, start=1))
        rf, min_isr = (3, 2) if nodes == 3 else (1, 1)
        state = self._read_state()
        state["kafka_nodes"] = nodes
        self._write_state(state)
        cluster_id = self._cluster_id(nodes) or new_cluster_id()
        infos = []
        for node, ports in enumerate(plan, start=1):
            props = self._write_node_config(node, ports, voters, rf, min_isr)
            infos.append(self._spawn_node(node, ports, props, libs, cluster_id))
        for info in infos:
            self._update(kafka_service(info["node_id"]), info)
        self._wait_kafka(infos[0], brokers=nodes)
        self._ensure_admin(infos[0])
        return infos[0]

    def _node_dir(self, node: int) -> Path:
        return self.home / kafka_service(node)

    def _cluster_id(self, nodes: int) -> str | None:
        """The id the existing nodes were formatted with (all must agree)."""
        for node in range(1, nodes + 1):
            meta = self._node_dir(node) / "data" / "meta.properties"
            if meta.is_file():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return None

    def _write_node_config(self, node: int, ports: dict[str, int], voters: str, rf: int, min_isr: int) -> Path:
        kdir = self._node_dir(node)
        kdir.mkdir(parents=True, exist_ok=True)
        cert = self._node_cert()  # one node identity for the local nodes (all on this machine)
        props = kdir / "server.properties"
        template = resources.files("bus.toolchain").joinpath("kafka-server.properties").read_text()
        props.write_text(
            template.replace("@NODE_ID@", str(node)).replace("@VOTERS@", voters)
            .replace("@PORT@", str(ports["port"])).replace("@CONTROLLER_PORT@", str(ports["controller_port"]))
            .replace("@INTERNAL_PORT@", str(ports["internal_port"])).replace("@DATA_DIR@", str(kdir / "data"))
            .replace("@KEYSTORE@", str(cert.keystore)).replace("@TRUSTSTORE@", str(cert.ca))
            .replace("@NODE_PRINCIPAL@", f"CN={self.NODE},O=sgbus partnership")
            .replace("@RF@", str(rf)).replace("@MIN_ISR@", str(min_isr))
            + f"\nssl.cipher.suites={','.join(KAFKA_TLS_CIPHERS)}\n"
        )
        return props

    def _node_jvm(self, node: int, libs: Path) -> list[str]:
        kdir = self._node_dir(node)
        log4j = kdir / "log4j2.properties"
        log4j.write_text(resources.files("bus.toolchain").joinpath("kafka-log4j2.properties").read_text())
        classpath = ":".join(str(p) for p in sorted(libs.glob("*.jar")))
        return [toolchain.java_binary(), *KAFKA_HEAP, *KAFKA_JIT, "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dsgbus.kafka.log={kdir / 'server.log'}", "-cp", classpath]

    def _spawn_node(self, node: int, ports: dict[str, int], props: Path, libs: Path,
                    cluster_id: str | None) -> dict[str, Any]:
        kdir = self._node_dir(node)
        jvm = self._node_jvm(node, libs)
        if cluster_id is not None and not (kdir / "data" / "meta.properties").is_file():
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage (node {node}) failed:\n{fmt.stdout}{fmt.stderr}")
        jmx_config = monitoring.write_yaml(kdir / "jmx-exporter.yaml", monitoring.JMX_EXPORTER_CONFIG)
        agent = f"-javaagent:{ensure_jmx_exporter(self.progress)}=127.0.0.1:{ports['jmx_port']}:{jmx_config}"
        stdout = (kdir / "stdout.log").open("ab")
        proc = subprocess.Popen(
            [*jvm[:1], agent, *jvm[1:], "kafka.Kafka", str(props)], stdout=stdout, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=kdir,
        )
        stdout.close()
        return {"pid": proc.pid, "node_id": node, **ports, "marker": str(props), "data_dir": str(kdir / "data"),
                "log": str(kdir / "server.log"), "version": toolchain.KAFKA_VERSION}

    def kill_kafka_node(self, node: int) -> None:
        """SIGKILL one node (the broker-loss tests): no shutdown, no handover."""
        info = self._read_state().get(kafka_service(node))
        if not info or not process_alive(info["pid"], info["marker"]):
            raise StackError(f"Kafka node {node} is not running")
        os.kill(info["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(info["pid"], info["marker"]) and time.monotonic() < deadline:
            _reap(info["pid"])
            time.sleep(0.05)

    def start_kafka_node(self, node: int) -> dict[str, Any]:
        """Start one stopped node again, on its ports and data, and wait until it serves."""
        info = self._read_state().get(kafka_service(node))
        if not info:
            raise StackError(f"Kafka node {node} was never started")
        if process_alive(info["pid"], info["marker"]):
            return dict(info)
        ports = {k: int(info[k]) for k in ("port", "controller_port", "internal_port", "jmx_port")}
        started = self._spawn_node(node, ports, Path(info["marker"]), toolchain.ensure_kafka(self.progress), None)
        self._update(kafka_service(node), started)
        self._wait_node(started)
        return started

    def active_controller(self) -> int | None:
        """The node id of the active KRaft controller (its JMX exporter reports
        ActiveControllerCount 1), or None while no node answers so."""
        state = self._read_state()
        for node in range(1, int(state.get("kafka_nodes", 1)) + 1):
            info = state.get(kafka_service(node))
            if not info or not process_alive(info["pid"], info["marker"]):
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{info['jmx_port']}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                active = "activecontrollercount" in line.lower() and not line.startswith("#")
                if active and float(line.split()[-1]) == 1:
                    return node
        return None

    def partition_leader(self, topic: str, partition: int) -> int:
        """The node id leading `topic`'s `partition` now."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.access().librdkafka(log_level=0))
        return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)

    def _wait_node(self, info: dict[str, Any]) -> None:
        """Until the node itself answers on its internal listener as a registered broker."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self._node_client(info))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not process_alive(info["pid"], info["marker"]):
                raise StackError(f"Kafka node {info['node_id']} exited during start; log {info['log']}:\n"
                                 f"{_tail(Path(info['log']))}")
            try:
                brokers: list[Any] = list(admin.list_topics(timeout=2).brokers.values())
            except Exception:  # not ready yet
                brokers = []
            if any(b.id == info["node_id"] for b in brokers):
                return
            time.sleep(0.2)
        raise StackError(f"Kafka node {info['node_id']} did not become ready in {READY_TIMEOUT_S:.0f}s")

    def _ensure_admin(self, info: dict[str, Any]) -> None:
        """The admin principal's SCRAM user, created through the node's own mTLS identity (so
        its secret never appears on a command line) whenever the broker lacks it."""
        from confluent_kafka.admin import AdminClient

        cred, _ = CredentialStore(self.home).ensure(ADMIN)
        admin = AdminClient(self._node_client(info))
        if ADMIN not in scram_users(admin):
            upsert_scram(admin, cred.username, cred.password)

    def _wait_kafka(self, info: dict[str, Any], brokers: int = 1) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self._node_client(info))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not process_alive(info["pid"], info["marker"]):
                raise StackError(f"Kafka exited during start; log {info['log']}:\n{_tail(Path(info['log']))}")
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) >= brokers:
                    return
            except Exception:  # not ready yet
                time.sleep(0.2)
        raise StackError(f"Kafka did not become ready in {READY_TIMEOUT_S:.0f}s; log {info['log']}")

    def stop_kafka(self) -> bool:
        """Every node at once: one by one, the last nodes of a cluster wait out their shutdown
        timeout for a controller quorum that the earlier ones took with them."""
        state = self._read_state()
        nodes = [(node, state[kafka_service(node)]) for node in range(int(state.get("kafka_nodes", 1)), 0, -1)
                 if state.get(kafka_service(node))]
        if not nodes:
            return False
        with ThreadPoolExecutor(len(nodes)) as pool:
            stopped = any(list(pool.map(lambda n: stop_process(n[1]["pid"], n[1]["marker"]), nodes)))
        for node, _info in nodes:
            self._update(kafka_service(node), None)
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
    def up(self, *, monitoring: bool = True) -> tuple[dict[str, Any], list[str]]:
        """Start whatever is not running; returns (status, names of services started).
        `monitoring=False`: Kafka and OPA only (a test's second stack)."""
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
            nodes = self._node_count()
            self.progress("starting Kafka ..." if nodes == 1 else f"starting Kafka ({nodes} KRaft nodes) ...")
            self.start_kafka()
            started.append("kafka")
        else:
            for node in status["kafka_nodes"]:
                if not node["alive"]:  # one node of a cluster down: bring it back
                    self.progress(f"starting Kafka node {node['node_id']} ...")
                    self.start_kafka_node(node["node_id"])
                    started.append(kafka_service(node["node_id"]))
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
        check_partition_counts(self.access(), topic_specs(partnership))
        if monitoring:
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
