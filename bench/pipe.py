"""`python -m bench run`: the whole pipe against its ceiling, latency under load, scaling, memory,
backfill and OPA batching, in one run on a local stack of its own."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench.forwarder import FORWARD_PARTITIONS, FORWARD_TOPIC
from bench.gateway import run_gateway
from bench.load import Broker, Prepared, Receiver, bench_producer, hops, percentile, prepare, publish_all, publish_paced
from bench.load import reset_topics as _reset_topics
from bench.opa import bench_opa
from bench.profile import summarise_collapsed
from bench.redaction import run_redaction
from bus.agents.pipeline import EXACTLY_ONCE_STAGES as STAGES  # the pipe's stages, without concern
from bus.demo import stop_worker
from bus.exceptions import StackError
from bus.policy.data import Partnership, load_partnership
from bus.provenance.registry import LocalSigners
from bus.pseudonymise.keyring import init_keyring
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import stage_app_id
from bus.stack import Stack
from bus.topics import DLQ, EVENTS, TopicSpec, deliver_topic, topic_specs

Progress = Callable[[str], None]
#: `bench` is not installed: the forwarder it spawns (`-m bench.forwarder`) is found from here
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchConfig:
    events: int = 6_000  # per throughput phase (ceiling, full pipe, two workers, stages)
    # Offered events/s for latency: the 200, 1,000 and 3,000, after a light load (50/s)
    # that shows the pipe's own latency without a queue.
    loads: tuple[int, ...] = (50, 200, 1000, 3000)
    # Seconds each load is offered: loads above what the pipe sustains build a backlog that
    # has to drain before the next one, so they are offered briefly.
    load_seconds: tuple[float, ...] = (5.0, 5.0, 3.0, 2.0)
    backfill: int = 200_000
    backfill_workers: int = 1
    backfill_stages: bool = True  # one process per stage, exactly-once
    #: the same backlog again, drained by one all-in-one worker (at-least-once)
    backfill_all_in_one: bool = True
    opa_batches: tuple[int, ...] = (1, 10, 100, 500)
    opa_seconds: float = 2.0
    #: how long the idle-CPU phase watches a quiet stack
    idle_seconds: float = 20.0
    profile: bool = True
    seed: int = 7
    drain_timeout_s: float = 1500.0
    gateway_rate: int = 200  # events/s offered through the HTTPS gateway (issue 16)
    gateway_seconds: float = 15.0
    gateway_events: int = 3000  # flat out, single and batched
    # One process per stage on a three-broker cluster: one route process, then two sharing the
    # route's partitions (issue 18); a stack of its own after the rest.
    cluster: bool = True
    #: a burst with ingest in the worker's own process too, beside the one with its second process
    one_process_burst: bool = True


FULL = BenchConfig()
SMOKE = BenchConfig(events=300, loads=(100,), load_seconds=(2.0,), backfill=600, backfill_workers=1,
                    opa_batches=(1, 10), opa_seconds=0.5, idle_seconds=2.0, profile=False, drain_timeout_s=120.0,
                    gateway_rate=50, gateway_seconds=2.0, gateway_events=100, cluster=False,
                    one_process_burst=False, backfill_all_in_one=False)
WARMUP = 20


#: the all-in-one worker doing all its work in its own process, without helpers (README "How an
#: event flows")
ONE_PROCESS = {"SGBUS_INGEST_PROCESS": "false", "SGBUS_AUDIT_PROCESS": "false"}
#: what every worker of the benchmark runs with unless a phase says otherwise: its fastest
#: configuration (both settings are off by default): ingest's work and the audit store's appends
#: each in a helper process (the ingest and audit stage workers honour theirs; route has none)
WORKER_ENV = {"SGBUS_INGEST_PROCESS": "true", "SGBUS_AUDIT_PROCESS": "true"}


def _proc_status(pid: int, field_name: str) -> int:
    """A kB figure from /proc/<pid>/status (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Harness:
    """One stack (own home, own ports) and the processes each phase starts."""

    home: Path
    policies_dir: Path
    progress: Progress
    stack: Stack = field(init=False)
    bootstrap: str = ""
    opa_url: str = ""
    access: KafkaAccess = field(init=False)
    partnership: Partnership = field(init=False)
    broker: Broker = field(init=False)
    pids: dict[str, int] = field(default_factory=dict)
    brokers: int = 1

    def __post_init__(self) -> None:
        self.stack = Stack(self.home, self.policies_dir, progress=self.progress, brokers=self.brokers)
        self.partnership = load_partnership(self.policies_dir / "data")

    def up(self) -> None:
        status, _ = self.stack.up()
        self.bootstrap, self.opa_url = status["kafka_bootstrap"], status["opa_url"]
        # The harness's own clients (load, observers, topic resets) run as the stack's admin;
        # the workers it starts connect as their stage principals, with TLS and SCRAM like any.
        self.access = self.stack.access()
        self.pids = {"kafka": status["kafka"]["pid"], "opa": status["opa"]["pid"]}
        self.broker = Broker(self.access)
        init_keyring(self.home / "keyring.json")

    def down(self) -> None:
        self.broker.close()
        self.stack.down()

    @property
    def deliver_topics(self) -> list[str]:
        return [deliver_topic(p.id) for p in self.partnership.partners]

    def reset(self) -> None:
        specs = [*topic_specs(self.partnership), TopicSpec(FORWARD_TOPIC, FORWARD_PARTITIONS)]
        _reset_topics(self.access, specs)

    def spawn(self, module: str, app_id: str, stage: str | None = None, env: dict[str, str] | None = None) -> Proc:
        log_path = self.home / f"{app_id}{'-' + stage if stage else ''}.log"
        log = log_path.open("ab")
        audit_db = self.home / f"{app_id}.db"  # workers of one app share the one chain, as in production
        env = {**os.environ, "SGBUS_HOME": str(self.home), "SGBUS_POLICIES_DIR": str(self.policies_dir),
               "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "SGBUS_APP_ID": app_id, "SGBUS_AUDIT_DB": str(audit_db),
               "SGBUS_METRICS_PORT": "0", "SGBUS_LOG_LEVEL": "warning",  # 0: each worker picks a free port
               # the sharing pipe alone, comparable with earlier runs (the concern agent adds work per batch)
               "SGBUS_CONCERN_ENABLED": "false", **WORKER_ENV, **(env or {})}
        args = (["worker"] + (["--stage", stage] if stage else [])) if module == "bus" else []
        popen = subprocess.Popen([sys.executable, "-m", module, *args],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        return Proc(popen, audit_db, log_path, stage)

    def wait_audited(self, procs: list[Proc], expected: int, what: str, timeout_s: float) -> float:
        """Until the workers' audit stores hold `expected` new records; returns when (wall clock)."""
        deadline = time.monotonic() + timeout_s
        last_report = time.monotonic()
        stored = 0
        while time.monotonic() < deadline:
            for p in procs:
                if p.popen.poll() is not None:
                    raise StackError(f"{what}: a worker exited with code {p.popen.returncode}; "
                                     f"last lines of {p.log}:\n{p.log_tail()}")
            stored = sum(audit_stored(db) for db in {p.audit_db for p in procs})
            if stored >= expected:
                return time.time()
            if time.monotonic() - last_report > 10:
                self.progress(f"  {what}: {stored:,}/{expected:,} audit records stored")
                last_report = time.monotonic()
            time.sleep(0.05 if stored >= 0.97 * expected else 0.5)
        raise StackError(f"{what}: {stored} of {expected} audit records stored after {timeout_s:.0f}s")

    def wait_group(self, group: str, members: int, timeout_s: float = 120.0) -> None:
        """Until the consumer group is stable with `members` members (so no rebalance mid-run)."""
        admin = AdminClient(self.access.librdkafka(log_level=0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                desc = admin.describe_consumer_groups([group])[group].result(10)
                if len(desc.members) == members and str(desc.state).endswith("STABLE"):
                    return
            except Exception:  # noqa: S110 - the group does not exist until a member joins
                pass
            time.sleep(0.2)
        raise StackError(f"consumer group {group} did not reach {members} stable member(s)")

    def await_count(self, topics: list[str], expected: int, what: str, timeout_s: float) -> None:
        got = self.broker.wait_count(topics, expected, timeout_s,
                                     progress=lambda n: self.progress(f"  {what}: {n:,}/{expected:,}"))
        if got < expected:
            raise StackError(f"{what}: {got} of {expected} after {timeout_s:.0f}s")

    def cpu(self, procs: dict[str, int]) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in procs.items()}


@dataclass
class Proc:
    """A worker (or the forwarder) process started by the harness."""

    popen: subprocess.Popen[bytes]
    audit_db: Path
    log: Path
    stage: str | None = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        stop_worker(self.popen)


def audit_stored(db: Path) -> int:
    """Records chained into an audit store so far (its head's sequence number), read by the
    harness itself: scraping the workers' /metrics twice a second cost them ~7 % of a core."""
    if not db.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT MAX(seq) FROM audit").fetchone()
    except sqlite3.OperationalError:  # the worker has not created the table yet
        return 0
    return int(row[0] or 0)


def _audits(records: list[Prepared]) -> int:
    return sum(r.candidates for r in records)


def helper_processes(pid: int) -> list[tuple[str, int]]:
    """A worker's helper processes (bus/helper_process.py), as (role, pid): its children named
    sgbus-ingest or sgbus-audit."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                comm = (entry / "comm").read_text().strip()
                if comm.startswith("sgbus-"):
                    found.append((comm.removeprefix("sgbus-"), int(entry.name)))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


def _rss_mb(pid: int) -> float:
    return round(_proc_status(pid, "VmHWM") / 1024, 1)


def _cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used by each process over a window (1.0 = one core busy; 0 for one that was
    replaced meanwhile, whose CPU time now reads 0)."""
    return {k: round(max(0.0, after[k] - before[k]) / seconds, 2) for k in after if seconds > 0}


def _watch(h: Harness, workers: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The processes whose CPU a phase counts: the broker, OPA, the workers and, as columns of
    their own, each worker's ingest process (SGBUS_INGEST_PROCESS); and those ingest processes."""
    helpers = {f"{name} {role}": child for name, pid in workers.items() for role, child in helper_processes(pid)}
    return {"kafka": h.pids["kafka"], "opa": h.pids["opa"], **workers, **helpers}, helpers


def start_workers(h: Harness, module: str, app_id: str, workers: int, stages: bool,
                  route_workers: int = 1, env: dict[str, str] | None = None) -> list[Proc]:
    """`workers` all-in-one processes, or one process per stage (`sgbus worker --stage`; the
    route stage in `route_workers` processes sharing its partitions)."""
    procs: list[Proc] = []
    try:
        if stages:
            procs += [h.spawn(module, app_id, stage) for stage in STAGES]
            procs += [h.spawn(module, app_id, "route") for _ in range(route_workers - 1)]
            for stage in STAGES:
                h.wait_group(stage_app_id(app_id, stage), route_workers if stage == "route" else 1)
        else:
            procs += [h.spawn(module, app_id, env=env) for _ in range(workers)]
            h.wait_group(stage_app_id(app_id, "all"), workers)
    except BaseException as exc:
        # Say why (a worker that exited, with its log), and stop the rest: left running, they
        # outlived the benchmark and took CPU from whatever ran next.
        exited = [f"{p.stage or 'worker'} exited with code {p.popen.returncode}; last lines of {p.log}:\n"
                  f"{p.log_tail()}" for p in procs if p.popen.poll() is not None]
        for p in procs:
            p.stop()
        if isinstance(exc, StackError) and exited:
            raise StackError("; ".join([str(exc), *exited])) from None
        raise
    return procs


def run_throughput(h: Harness, name: str, module: str, workers: int, records: list[Prepared],
                   warm: list[Prepared], cfg: BenchConfig, profile_out: Path | None = None,
                   extra: list[Prepared] | None = None, stages: bool = False,
                   route_workers: int = 1, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Drain a burst of `records` as fast as it goes: events/s from the first publish to the
    last output (the pipe: the last audit record stored; the ceiling: the last forwarded record)."""
    h.reset()
    app_id = f"bench-{name}-{time.time_ns()}"
    pipe = module == "bus"
    procs = start_workers(h, module, app_id, workers, stages, route_workers, env)
    try:
        producer = bench_producer(h.access)
        publish_all(producer, warm)
        if pipe:
            h.wait_audited(procs, _audits(warm), f"{name} warm-up", 180)
        else:
            h.await_count([FORWARD_TOPIC], len(warm), f"{name} warm-up", 180)
        watch, helpers = _watch(h, {f"worker{i}": p.pid for i, p in enumerate(procs)})
        cpu0 = h.cpu(watch)
        start = time.time()
        publish_all(producer, records)
        if pipe:
            end = h.wait_audited(procs, _audits(warm) + _audits(records), name, cfg.drain_timeout_s)
        else:
            h.await_count([FORWARD_TOPIC], len(warm) + len(records), name, cfg.drain_timeout_s)
            end = h.broker.last_timestamp([FORWARD_TOPIC])
        seconds = max(end - start, 1e-3)
        result: dict[str, Any] = {
            "events": len(records), "workers": workers, "seconds": round(seconds, 2),
            "events_per_s": round(len(records) / seconds, 1),
            "cores_used": _cpu_share(cpu0, h.cpu(watch), seconds),
        }
        if pipe:
            result["audit_records"] = _audits(records)
            result["deliveries"] = h.broker.count_committed(h.deliver_topics)
        if profile_out is not None and extra:
            result["profile"] = _profile(h, procs[0], extra, _audits(warm) + _audits(records), profile_out)
        result["worker_peak_rss_mb"] = [_rss_mb(p.pid) for p in procs]
        if helpers:
            result["helper_peak_rss_mb"] = {label: _rss_mb(pid) for label, pid in helpers.items()}
        return result
    finally:
        for p in procs:
            p.stop()


def _profile(h: Harness, proc: Proc, extra: list[Prepared], stored_before: int, out: Path) -> dict[str, Any]:
    """py-spy samples the worker (non-blocking, so it barely slows it) while it drains `extra`."""
    pyspy = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([str(pyspy), "record", "--pid", str(proc.pid), "--rate", "200", "--nonblocking",
                            "--format", "raw", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches asynchronously; let it start sampling before the burst
    if spy.poll() is not None:
        return {"error": (spy.stderr.read().decode() if spy.stderr else "")[-300:] or "py-spy exited"}
    publish_all(bench_producer(h.access), extra)
    h.wait_audited([proc], stored_before + _audits(extra), "profiled run", 600)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not out.is_file():
        return {"error": "py-spy wrote no profile"}
    return {"events": len(extra), "tool": "py-spy 0.4.1 record --rate 200 --nonblocking",
            **summarise_collapsed(out.read_text(errors="replace"))}


def run_latency(h: Harness, cfg: BenchConfig, loads: list[list[Prepared]], warm: list[Prepared]) -> dict[str, Any]:
    """Offer each load on a fixed schedule; latency = partner consumer receipt - publish time."""
    h.reset()
    app_id = f"bench-latency-{time.time_ns()}"
    worker = h.spawn("bus", app_id)
    results = []
    try:
        h.wait_group(stage_app_id(app_id, "all"), 1)
        producer = bench_producer(h.access)
        publish_all(producer, warm)
        expected = _audits(warm)
        h.wait_audited([worker], expected, "latency warm-up", 180)
        procs, _ = _watch(h, {"worker": worker.pid})
        for rate, records in zip(cfg.loads, loads, strict=True):
            # sg.events too: where each event was between publish and its partner's copy
            receiver = Receiver(h.access, h.broker.end_offsets([*h.deliver_topics, EVENTS]),
                                passing=frozenset({EVENTS})).start()
            cpu_before = h.cpu(procs)
            t0 = time.time()
            sent = publish_paced(producer, records, rate)
            offered_s = time.time() - t0
            cores = _cpu_share(cpu_before, h.cpu(procs), offered_s)
            expected += _audits(records)
            drained_s = h.wait_audited([worker], expected, f"latency at {rate}/s", cfg.drain_timeout_s) - t0
            receiver.wait_quiet(1.0)
            receiver.stop()
            lat = [(t - sent[eid]) * 1000 for eid, t in receiver.received if eid in sent]
            row: dict[str, Any] = {"offered_per_s": rate, "events": len(records),
                                   "achieved_offer_per_s": round(len(records) / offered_s, 1),
                                   "deliveries_measured": len(lat),
                                   "processed_per_s": round(len(records) / max(drained_s, offered_s), 1)}
            if lat:
                row |= {f"p{q}_ms": round(percentile(lat, q), 1) for q in (50, 95, 99)}
                row["max_ms"] = round(max(lat), 1)
            row["hops_ms"] = {name: {f"p{q}": round(percentile(v, q), 1) for q in (50, 99)}
                              for name, v in hops(sent, receiver.stamps, EVENTS).items() if v}
            row["cores_used_while_offered"] = cores
            results.append(row)
            h.progress(f"  at {rate}/s: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "offered_per_s"))
        return {"loads": results, "worker_peak_rss_mb": _rss_mb(worker.pid)}
    finally:
        worker.stop()


def run_idle(h: Harness, warm: list[Prepared], seconds: float = 20.0) -> dict[str, Any]:
    """CPU of a quiet stack: one all-in-one worker that has shared its warm-up and then sees
    nothing, with Kafka and OPA, over `seconds` (what a low fetch wait costs when nothing flows)."""
    h.reset()
    app_id = f"bench-idle-{time.time_ns()}"
    worker = h.spawn("bus", app_id)
    try:
        h.wait_group(stage_app_id(app_id, "all"), 1)
        publish_all(bench_producer(h.access), warm)
        h.wait_audited([worker], _audits(warm), "idle warm-up", 180)
        time.sleep(2.0)  # let the warm-up's last commits and checkpoints settle
        watch = {"kafka": h.pids["kafka"], "opa": h.pids["opa"], "worker": worker.pid}
        cpu0, t0 = h.cpu(watch), time.time()
        time.sleep(seconds)
        return {"seconds": seconds, "cores_used": _cpu_share(cpu0, h.cpu(watch), time.time() - t0)}
    finally:
        worker.stop()


def run_backfill(h: Harness, cfg: BenchConfig, records: list[Prepared]) -> dict[str, Any]:
    """A backlog published while no worker runs, then drained by `backfill_workers` workers
    started together: time taken and no loss (checked in the audit store and partner topics)."""
    h.reset()
    t_pub = time.time()
    publish_all(bench_producer(h.access), records)
    publish_s = time.time() - t_pub
    start = time.time()
    app_id = f"bench-backfill-{time.time_ns()}"
    if cfg.backfill_stages:
        workers = [h.spawn("bus", app_id, stage) for stage in STAGES]
    else:
        workers = [h.spawn("bus", app_id) for _ in range(cfg.backfill_workers)]
    try:
        end = h.wait_audited(workers, _audits(records), "backfill", cfg.drain_timeout_s)
        seconds = end - start
        rss = [_rss_mb(w.pid) for w in workers]
        # The helper processes (the ingest stage's, the audit stage's), read before they end with their workers.
        helper_rss = {(f"the {w.stage} stage's" if w.stage else f"worker {i}'s") + f" {role} process": _rss_mb(child)
                      for i, w in enumerate(workers) for role, child in helper_processes(w.pid)}
        with closing(sqlite3.connect(workers[0].audit_db)) as db:
            n_records, n_allow = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(json_extract(body, '$.decision') = 'allow'), 0) FROM audit"
            ).fetchone()
            stored_ids = {r[0] for r in db.execute("SELECT DISTINCT event_id FROM audit")}
        deliveries = h.broker.count_committed(h.deliver_topics)
        missing = len({r.event_id for r in records} - stored_ids)
        return {
            "events": len(records), "workers": "one per stage" if cfg.backfill_stages else cfg.backfill_workers,
            "publish_seconds": round(publish_s, 1),
            "seconds_from_worker_start": round(seconds, 1),
            "events_per_s": round(len(records) / seconds, 1),
            "events_audited": len(stored_ids), "events_missing": missing,
            "audit_records": n_records, "audit_records_expected": _audits(records),
            "allowed_decisions": n_allow, "deliveries": deliveries,
            "dead_letters": h.broker.count_committed([DLQ]),
            "zero_loss": missing == 0 and n_records == _audits(records) and deliveries == n_allow,
            "worker_peak_rss_mb": rss,
            "helper_peak_rss_mb": helper_rss,
        }
    finally:
        for w in workers:
            w.stop()


def _prepare_phases(h: Harness, cfg: BenchConfig) -> tuple[LocalSigners, list[Prepared], list[Prepared],
                                                             list[Prepared], list[list[Prepared]]]:
    """Each organisation's signing key (issued here so the stack's bundle registers it) and the
    signed events of the throughput, profile, warm-up and latency phases."""
    signers = LocalSigners(h.home)
    signers.ensure_publishers((p.agency, p.org_id) for p in h.partnership.partners)
    main = prepare(h.partnership, cfg.events, cfg.seed, signers.sign)
    extra = prepare(h.partnership, cfg.events // 2, cfg.seed + 1, signers.sign) if cfg.profile else []
    warm = prepare(h.partnership, WARMUP, cfg.seed + 2, signers.sign)
    loads = [prepare(h.partnership, int(rate * seconds), cfg.seed + 10 + i, signers.sign)
             for i, (rate, seconds) in enumerate(zip(cfg.loads, cfg.load_seconds, strict=True))]
    return signers, main, extra, warm, loads


def run_all(cfg: BenchConfig, policies_dir: Path, results_dir: Path, progress: Progress,
            home: Path | None = None) -> dict[str, Any]:
    """Every phase in order on one stack; returns the results (also the JSON files' content)."""
    own_home = home is None
    home = Path(tempfile.mkdtemp(prefix="sgbus-bench-")) if home is None else home
    h = Harness(home.resolve(), policies_dir.resolve(), progress)
    began = time.time()
    progress(f"preparing {cfg.events:,} + {cfg.backfill:,} synthetic events ...")
    signers, main, extra, warm, loads = _prepare_phases(h, cfg)
    backfill = prepare(h.partnership, cfg.backfill, cfg.seed + 3, signers.sign)
    through_gateway = [prepare(h.partnership, n, cfg.seed + 20 + i, signers.sign) for i, n in
                       enumerate((int(cfg.gateway_rate * cfg.gateway_seconds), cfg.gateway_events, cfg.gateway_events))]
    results: dict[str, Any] = {"config": asdict(cfg)}
    progress("free-text redaction: held-out corpus, ingest with and without it ...")
    results["redaction"] = run_redaction(policies_dir.resolve().parent, 500 if cfg.events < 1000 else 5000)
    h.up()
    try:
        progress(f"ceiling: Faust forwarder, {len(main):,} events ...")
        results["ceiling"] = run_throughput(h, "ceiling", "bench.forwarder", 1, main, warm, cfg)
        progress(f"  {results['ceiling']['events_per_s']:,} events/s")
        progress(f"full pipe: one worker, {len(main):,} events ...")
        results["pipe"] = run_throughput(h, "pipe", "bus", 1, main, warm, cfg,
                                         profile_out=results_dir / "profile-pipe.collapsed" if cfg.profile else None,
                                         extra=extra)
        progress(f"  {results['pipe']['events_per_s']:,} events/s")
        ratio = results["pipe"]["events_per_s"] / results["ceiling"]["events_per_s"]
        results["ratio_full_to_ceiling"] = round(ratio, 3)
        if cfg.one_process_burst:
            progress(f"full pipe: one worker without helper processes, {len(main):,} events ...")
            results["pipe_one_process"] = run_throughput(h, "pipe1", "bus", 1, main, warm, cfg, env=ONE_PROCESS)
            progress(f"  {results['pipe_one_process']['events_per_s']:,} events/s")
        progress(f"full pipe: two workers, {len(main):,} events ...")
        results["two_workers"] = run_throughput(h, "scale", "bus", 2, main, warm, cfg)
        progress(f"  {results['two_workers']['events_per_s']:,} events/s")
        progress(f"full pipe: one process per stage (exactly-once), {len(main):,} events ...")
        results["stages"] = run_throughput(h, "stages", "bus", 1, main, warm, cfg, stages=True)
        progress(f"  {results['stages']['events_per_s']:,} events/s")
        progress(f"latency at offered loads {', '.join(map(str, cfg.loads))} events/s ...")
        results["latency"] = run_latency(h, cfg, loads, warm)
        progress("idle CPU of a quiet stack ...")
        results["idle"] = run_idle(h, warm, cfg.idle_seconds)
        progress(f"  {results['idle']['cores_used']}")
        progress(f"backfill of {len(backfill):,} events ...")
        results["backfill"] = run_backfill(h, cfg, backfill)
        bf = results["backfill"]
        progress(f"  {bf['seconds_from_worker_start']}s, zero loss: {bf['zero_loss']}")
        if cfg.backfill_all_in_one and cfg.backfill_stages:
            progress(f"backfill of {len(backfill):,} events, one all-in-one worker ...")
            try:
                results["backfill_all_in_one"] = run_backfill(
                    h, replace(cfg, backfill_stages=False, backfill_workers=1), backfill)
                bf = results["backfill_all_in_one"]
                progress(f"  {bf['seconds_from_worker_start']}s, zero loss: {bf['zero_loss']}")
            except StackError as exc:  # a second look at the backlog: the rest of the run still reports
                progress(f"all-in-one backfill failed: {exc}")
                results["backfill_all_in_one"] = {"error": str(exc)}  # said in the report, not left out
        progress("OPA decisions/s by batch size ...")
        results["opa"] = [{"batch_size": r.batch_size, "queries": r.queries, "decisions": r.decisions,
                           "decisions_per_s": round(r.decisions_per_s, 1), "ms_per_query": round(r.ms_per_query, 2)}
                          for r in bench_opa(h.stack.opa_access("worker"), policies_dir, list(cfg.opa_batches),
                                                    cfg.opa_seconds)]
        progress("HTTPS gateway: publishing over mutual TLS ...")
        h.reset()
        paced, single, batched = through_gateway
        results["gateway"] = run_gateway(h.home, h.policies_dir, h.partnership, paced, float(cfg.gateway_rate),
                                         single, batched, progress=progress, cpu_seconds=cpu_seconds)
    finally:
        h.down()
    try:
        if cfg.cluster:
            try:
                results["cluster"] = run_cluster(h, cfg, main, warm, progress)
            except StackError as exc:  # the rest of the run still reports
                progress(f"three-broker phase failed: {exc}")
                results["cluster"] = {"error": str(exc)}
    finally:
        if own_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    results["wall_seconds"] = round(time.time() - began, 1)
    return results


def run_cluster(h: Harness, cfg: BenchConfig, main: list[Prepared], warm: list[Prepared],
                progress: Progress) -> dict[str, Any]:
    """One process per stage on three brokers (replication 3, min.insync 2): one route process,
    then two sharing the route's partitions (each partition's transactions fence the other's).
    `h`: the harness whose publishers signed `main` (after the main phases, or a bare one)."""
    import shutil

    home = h.home / "cluster"
    home.mkdir(exist_ok=True)
    # The events were signed with the first stack's publisher keys: register the same ones.
    shutil.copytree(h.home / "signing", home / "signing", dirs_exist_ok=True)
    shutil.copytree(h.home / "partnership", home / "partnership", dirs_exist_ok=True)
    c = Harness(home, h.policies_dir, progress, brokers=3)
    c.up()
    try:
        progress(f"three brokers: one process per stage, {len(main):,} events ...")
        one = run_throughput(c, "cluster1", "bus", 1, main, warm, cfg, stages=True)
        progress(f"  {one['events_per_s']:,} events/s")
        progress(f"three brokers: two route processes, {len(main):,} events ...")
        two = run_throughput(c, "cluster2", "bus", 1, main, warm, cfg, stages=True, route_workers=2)
        progress(f"  {two['events_per_s']:,} events/s")
    finally:
        c.down()
    return {"brokers": 3, "one_route": one, "two_route": two}


def run_cluster_alone(cfg: BenchConfig, policies_dir: Path, progress: Progress) -> dict[str, Any]:
    """The three-broker scaling rows on a stack of their own (`python -m bench cluster`)."""
    import shutil

    home = Path(tempfile.mkdtemp(prefix="sgbus-bench-cluster-"))
    try:
        partnership = load_partnership(policies_dir / "data")
        signers = LocalSigners(home)
        signers.ensure_publishers((p.agency, p.org_id) for p in partnership.partners)
        main = prepare(partnership, cfg.events, cfg.seed, signers.sign)
        warm = prepare(partnership, WARMUP, cfg.seed + 2, signers.sign)
        h = Harness(home, policies_dir.resolve(), progress)  # its home (the signers) and policies only
        return run_cluster(h, cfg, main, warm, progress)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_core(cfg: BenchConfig, policies_dir: Path, results_dir: Path, progress: Progress) -> dict[str, Any]:
    """The figures a performance change moves, in a few minutes: ceiling, one worker (profiled),
    latency at the lighter loads and idle CPU (`python -m bench core`; no report rewritten)."""
    import shutil

    home = Path(tempfile.mkdtemp(prefix="sgbus-bench-core-"))
    h = Harness(home.resolve(), policies_dir.resolve(), progress)
    try:
        _, main, extra, warm, loads = _prepare_phases(h, cfg)
        results: dict[str, Any] = {"config": asdict(cfg)}
        h.up()
        try:
            progress(f"ceiling: Faust forwarder, {len(main):,} events ...")
            results["ceiling"] = run_throughput(h, "ceiling", "bench.forwarder", 1, main, warm, cfg)
            progress(f"full pipe: one worker, {len(main):,} events ...")
            results["pipe"] = run_throughput(h, "pipe", "bus", 1, main, warm, cfg, extra=extra,
                                             profile_out=results_dir / "profile-core.collapsed" if cfg.profile
                                             else None)
            results["ratio_full_to_ceiling"] = round(
                results["pipe"]["events_per_s"] / results["ceiling"]["events_per_s"], 3)
            progress(f"full pipe: one worker without helper processes, {len(main):,} events ...")
            results["pipe_one_process"] = run_throughput(h, "pipe1", "bus", 1, main, warm, cfg, env=ONE_PROCESS)
            progress(f"latency at offered loads {', '.join(map(str, cfg.loads))} events/s ...")
            results["latency"] = run_latency(h, cfg, loads, warm)
            progress("idle CPU of a quiet stack ...")
            results["idle"] = run_idle(h, warm, cfg.idle_seconds)
        finally:
            h.down()
        return results
    finally:
        shutil.rmtree(home, ignore_errors=True)
