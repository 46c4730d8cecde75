"""Create the Faust app and wire the agents to the services they call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from bus.agents.direct_producer import DirectProducer
from bus.agents.replays import EventsReader
from bus.audit.chain import AuditStore, Checkpoint
from bus.audit.signer import AuditSigner
from bus.audit_process import AuditProcess
from bus.exceptions import PolicyUnavailable
from bus.faust_kafka import App
from bus.ingest_process import IngestProcess
from bus.metrics import Metrics
from bus.provenance.registry import SignerRegistry
from bus.pseudonymise.keyring import Keyring, KeyringWatch
from bus.route import Router
from bus.security.files import private_dir
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import stage_app_id
from bus.settings import Settings


class SignerSource:
    """The signing key register ingest verifies against: the one in the policy bundle OPA
    serves, re-read every `refresh_s` and when a key is unknown (at most every `min_gap_s`)."""

    def __init__(self, fetch: Callable[[], SignerRegistry], refresh_s: float = 30.0, min_gap_s: float = 2.0,
                 max_stale_s: float = 300.0) -> None:
        self._fetch, self.refresh_s, self.min_gap_s = fetch, refresh_s, min_gap_s
        self.max_stale_s = max_stale_s
        self.registry = SignerRegistry()
        self.loaded = False
        self._at = 0.0
        self._fresh_at = 0.0  # the last register OPA answered with

    def stale(self) -> bool:
        """The register in hand is older than `max_stale_s`: a key revoked meanwhile must not pass."""
        return self.loaded and time.monotonic() - self._fresh_at > self.max_stale_s

    def due(self, *, unknown_key: bool = False) -> bool:
        """Whether `refresh` would read the register again (an HTTP call) rather than return it."""
        age = time.monotonic() - self._at
        return not self.loaded or age >= self.refresh_s or (unknown_key and age >= self.min_gap_s)

    async def current(self, *, unknown_key: bool = False) -> SignerRegistry:
        """The register for a batch: re-read in a thread when due (an HTTP call), otherwise the
        one in hand without a thread hop (each cost a batch ~1-5 ms of latency on a busy machine)."""
        if self.due(unknown_key=unknown_key) or self.stale():
            return await asyncio.to_thread(self.refresh, unknown_key=unknown_key)
        return self.registry

    def refresh(self, *, unknown_key: bool = False) -> SignerRegistry:
        """Re-read when due (or, for an unknown key, when the last read is `min_gap_s` old);
        keeps the last register if OPA cannot answer, for up to `max_stale_s`, and raises
        PolicyUnavailable if there is none, or none that recent (ingest then holds its batch: an
        empty register would reject every event, and an old one could pass a revoked key)."""
        if self.due(unknown_key=unknown_key):
            self._at = time.monotonic()
            try:
                self.registry = self._fetch()
                self.loaded, self._fresh_at = True, self._at
            except Exception as exc:  # keep the last good register a while; never let ingest die of it
                if not self.loaded:
                    raise PolicyUnavailable(f"no signing key register yet: {type(exc).__name__}") from None
        if self.stale():
            raise PolicyUnavailable("the signing key register has not been re-read from OPA for too long")
        return self.registry


@dataclass
class Services:
    """Everything the agents need, built once per worker process."""

    settings: Settings
    keys: KeyringWatch
    metrics: Metrics
    router: Router
    #: the audit stage's connection to the chain (None in a worker without the audit stage)
    audit_store: AuditStore | None
    signers: SignerSource
    #: the ingest stage's own connection to the store's event id register (a connection is
    #: not shared between the ingest and audit agents' threads; None without the ingest stage)
    event_register: AuditStore | None
    audit_signer: AuditSigner | None = None
    #: signs what the concern stage raises, as its source organisation (agency bus)
    concern_sign: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: prepares the all-in-one worker's ingest batches in a process of its own (SGBUS_INGEST_PROCESS)
    ingest_process: IngestProcess | None = None
    #: appends the audit agent's batches to the store in a process of its own (SGBUS_AUDIT_PROCESS)
    audit_process: AuditProcess | None = None
    #: the audit chain's head published on sg.audit.heads when the worker started (SGBUS_AUDIT_ANCHOR)
    audit_anchor: Checkpoint | None = None
    #: fetches the sg.events record a replay request names (workers with the route stage)
    events_reader: EventsReader | None = None

    @property
    def keyring(self) -> Keyring:
        return self.keys()


def faust_options(access: KafkaAccess, home: Path, guarantee: str = "at_least_once", *,
                  session_timeout_s: float = 15.0) -> dict[str, Any]:
    """Faust settings shared by the worker and the benchmark's ceiling forwarder."""
    datadir = home.resolve() / "faust"
    private_dir(datadir)  # Faust creates only the last level
    return dict(
        broker=f"kafka://{access.bootstrap}",
        broker_credentials=access.faust_credentials(),
        store="memory://",
        # Faust's default is "<app id>-data" in the working directory; keep it with the rest of
        # the worker's state under SGBUS_HOME.
        datadir=str(datadir / "{conf.name}"),
        web_enabled=False,
        # How long a crashed worker's partitions stay with it before the group hands them on
        # (Faust's default, 60 s, was a minute of nothing shared after every crash).
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=session_timeout_s / 5,  # five heartbeats a session, as Faust's 60/3 gave 20
        topic_allow_declare=False,  # topics are created explicitly by `sgbus stack up`
        topic_disable_leader=True,
        # at_least_once: Faust flushes the producer before committing offsets, so nothing is
        # lost; a crash may repeat a batch (the audit store keeps one record per decision).
        # exactly_once: one stage per process (`--stage`), with sgbus's own transaction
        # handling on top of Faust's (bus/agents/pipeline.py; README "Exactly once").
        processing_guarantee=guarantee,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # At least once, no linger: a batch's sends (sg.events, the copies, its audit records)
        # are made in one go, so they leave in one produce request anyway, and a linger only
        # delayed each copy (at 50 events/s: copy -> partner 14-15 ms with 5 ms, 7-9 ms
        # without, the same produce requests a second). Exactly-once stages keep 5 ms: their
        # sends interleave with transaction calls, and fewer, larger requests cost less there.
        producer_linger=0.0 if guarantee == "at_least_once" else 0.005,
        # A partition's record batch holds up to 256 KiB (aiokafka's default, 16 KiB, holds ~10
        # sg.events records): aiokafka has one produce request in flight to a broker, and a send
        # to a partition whose batch is full waits for it, so writing a 250-event batch to
        # sg.events took several round trips. Alternating one-worker bursts: 1,026 against 981
        # events/s (6 pairs, 4 higher; docs/BENCHMARKS.md session 22, and session 21's full runs).
        # Well under the brokers' 1 MiB limit on a batch.
        producer_max_batch_size=256 * 1024,
        # Exactly-once stages commit after each batch themselves (bus/agents/pipeline.py), so
        # the timed commit, which can land mid-batch, is pushed out of the way.
        broker_commit_every=1000 if guarantee == "at_least_once" else 10**9,
        broker_commit_interval=1.0 if guarantee == "at_least_once" else 3600.0,
    )


def direct_producer_config(access: KafkaAccess, app_id: str, linger_ms: float) -> dict[str, Any]:
    """librdkafka properties of the all-in-one worker's producer (bus/agents/direct_producer.py):
    as Faust's at-least-once producer (bus/faust_kafka.py), idempotent with acks from every
    in-sync replica, so a send retried after a broker loss is written once."""
    # Java's (and aiokafka's) partitioner, not librdkafka's default (CRC32): a key keeps the
    # partition Faust's producer gave it, so one child's events, copies and concern picture stay
    # on one partition across the switch (and across all-in-one <-> stage workers).
    return access.librdkafka_producer(**{
        "client.id": f"{app_id}-sends",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        # A request holds up to 1 MiB (the brokers' limit); librdkafka's default is the same.
        "batch.size": 1024 * 1024,
        # Errors only: its connection notices would repeat what Faust's client logs.
        "log_level": 3,
    })


def create_app(access: KafkaAccess, services: Services, stage: str = "all") -> faust.App:
    """All stages in one app (at-least-once), or one stage with its own consumer group and
    Kafka transactions (exactly-once): `sgbus worker --stage ingest|route|audit`."""
    from bus.agents.pipeline import SHARING_STAGES, register

    # The app id is the consumer group and prefixes the transactional ids: both start with the
    # stage's prefix, the only groups and ids its principal may use (bus/security/principals.py).
    app_id = stage_app_id(services.settings.app_id, stage)
    settings = services.settings
    fetching = {"fetch_max_wait_ms": settings.fetch_max_wait_ms, "fetch_linger_ms": settings.fetch_linger_ms}
    if stage == "all":
        app = App(app_id, **fetching,
                  **faust_options(access, settings.home, session_timeout_s=settings.session_timeout_s),
                  stream_buffer_maxsize=settings.worker_stream_buffer)
        if settings.librdkafka_sends:
            app.direct = DirectProducer(direct_producer_config(access, app_id, settings.librdkafka_linger_ms))
        register(app, services, SHARING_STAGES)
    elif stage == "concern":  # its raises are idempotent (derived ids), its table at-least-once
        # Faust's own 60 s session, not SGBUS_SESSION_TIMEOUT_S: with 15 s, a concern stage
        # restarted after a SIGKILL once came back with its table empty (the restart test failed;
        # with 60 s it passes). The mechanism inside Faust's recovery is not known.
        app = App(app_id, **fetching, **faust_options(access, settings.home, session_timeout_s=60.0))
        register(app, services, (stage,))
    else:  # the audit stage too, so it reads only committed audit records
        app = App(app_id, **fetching,
                  **faust_options(access, settings.home, "exactly_once", session_timeout_s=settings.session_timeout_s))
        register(app, services, (stage,), exactly_once=True)
    return app
