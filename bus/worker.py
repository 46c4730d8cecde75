"""Build the services and run the Faust worker process."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import faust

from bus import logs
from bus.agents.pipeline import SHARING_STAGES, routes_at_ingest
from bus.agents.replays import EventsReader
from bus.app import Services, SignerSource, create_app
from bus.audit.chain import open_audit_store, warn_if_login_can_rewrite
from bus.audit.signer import load_signer
from bus.exceptions import ConfigurationError, PolicyUnavailable, StackError
from bus.metrics import Metrics
from bus.ops import targets
from bus.ops.lag import Group, LagCollector
from bus.ops.serve import serve_metrics
from bus.policy.cache import DecisionCache
from bus.policy.client import PolicyClient
from bus.policy.loader import fetch_partnership, fetch_signers
from bus.pseudonymise.keyring import KeyringWatch
from bus.route import Router
from bus.security.opa_auth import OpaAccess
from bus.security.principals import STAGE_PRINCIPALS, stage_app_id, stage_group_prefix
from bus.security.resolve import kafka_access, opa_access
from bus.settings import Settings
from bus.topics import EVENTS, REPLAY, live_partitions, replay_partitions_problem

log = logs.get("sgbus.worker")


def _wait_for_partnership(opa: OpaAccess, metrics: Metrics):  # type: ignore[no-untyped-def]
    """Fail closed at start too: route nothing until OPA answers with the partnership data."""
    delay = 0.2
    while True:
        try:
            partnership, revision = fetch_partnership(opa)
            metrics.opa_up.set(1)
            return partnership, revision
        except PolicyUnavailable as exc:
            metrics.opa_up.set(0)
            log.warning("waiting_for_opa", cause=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _no_keys(force: bool = False) -> Any:
    raise ConfigurationError("the audit stage holds no pseudonymisation keys")


def run_worker(settings: Settings, bootstrap: str, opa_url: str, stage: str = "all") -> None:
    # Each stage connects as its own principal and may touch only its own topics and groups.
    access = kafka_access(settings, bootstrap, STAGE_PRINCIPALS[stage])
    opa = opa_access(settings, opa_url, "worker")
    secret = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    # The audit stage stores and signs decisions; it never reads an identity, so it holds no
    # pseudonymisation keys (in a deployment, never beside the audit signing key).
    keys: Any = KeyringWatch(settings.keyring_path, secret) if stage != "audit" else _no_keys
    # Only the audit stage signs checkpoints; no other process needs (or gets) the key.
    audit_signer = None
    if stage in ("all", "audit"):
        audit_secret = settings.audit_signing_key_json
        audit_signer = load_signer(settings.home, audit_secret.get_secret_value() if audit_secret else None)
    if stage == "route":
        # Route redacts free text a reloaded policy asks redacted that ingest only sealed: the
        # model must be there (loaded when first needed, so the route process stays small).
        from bus.redaction import model

        try:
            model.verify()
        except model.ModelError as exc:
            log.error("redaction_model_unusable", cause=str(exc))
            raise SystemExit(2) from None
        counts = live_partitions(access, [EVENTS, REPLAY])
        problem = replay_partitions_problem(counts[EVENTS], counts[REPLAY])
        if problem is not None:
            log.error("topic_partitions_unsafe", problem=problem)
            raise SystemExit(2)
    ingest_process = None
    if stage in ("all", "ingest"):
        # Ingest redacts free text: refuse to start without the pinned model (rather than
        # dead-letter every event), then load it in the background while Kafka connects.
        from bus.redaction import model

        try:
            model.verify()
        except model.ModelError as exc:
            log.error("redaction_model_unusable", cause=str(exc))
            raise SystemExit(2) from None
        if settings.ingest_process and (stage == "ingest" or settings.route_at_ingest):
            from bus.ingest_process import IngestProcess

            # It loads the model itself; this process only if a reloaded policy asks route to redact
            # (the ingest stage: never, so it stays small).
            ingest_process = IngestProcess(settings.keyring_path, secret)
            ingest_process.start()
        else:
            from bus.redaction import warm_up  # Presidio and spaCy: only where ingest redacts in this process

            warm_up()
    audit_process = None
    if stage in ("all", "audit") and settings.audit_process:
        from bus.audit_process import AuditProcess

        audit_process = AuditProcess(settings, sign=audit_signer is not None)
        audit_process.start()
    metrics = Metrics()
    # Lag of this stage's own group, read with its own principal. An all-in-one worker that routes
    # at ingest reads sg.events no more (it did, before replays had sg.replay): what its group
    # committed there is not lag.
    left = frozenset({EVENTS}) if stage == "all" and routes_at_ingest(settings, SHARING_STAGES, False) else frozenset()
    metrics.registry.register(LagCollector(access, [Group(stage, stage_app_id(settings.app_id, stage), left=left)]))
    _server, url = serve_metrics(metrics.registry, settings, "sgbus-worker", {"stage": stage})
    log.info("metrics_serving", url=url)
    partnership, revision = _wait_for_partnership(opa, metrics)
    agreements = [a.id for a in partnership.agreements] + ([partnership.emergency.id] if partnership.emergency else [])
    metrics.prime(agreements, [p.id for p in partnership.partners],
                  [r.id for r in partnership.concern.rules] if partnership.concern else [])
    metrics.calendar_in_force(partnership.school_calendar)
    log.info("policy_loaded", revision=revision, partners=len(partnership.partners))
    concern_sign = (_concern_signer(settings, access, stage)
                    if stage == "concern" and settings.concern_enabled else None)
    policy = PolicyClient(opa, timeout_s=settings.opa_timeout_s)
    audit_anchor = (_published_audit_head(settings, access, stage)
                    if audit_signer is not None and settings.audit_anchor == "published" else None)
    # Only the stages that use the store connect to it: in a deployment each has a login of its
    # own, with only the rights its work needs (bus/audit/roles.py).
    audit_store = open_audit_store(settings) if stage in ("all", "audit") else None
    event_register = open_audit_store(settings) if stage in ("all", "ingest") else None
    warn_if_login_can_rewrite(audit_store or event_register)
    services = Services(settings=settings, keys=keys, metrics=metrics,
                        router=Router(partnership, keys() if stage != "audit" else cast(Any, None), policy,
                                      revision,
                                      source=lambda: fetch_partnership(opa),
                                      query_events=settings.batch_size, keyring_source=keys,
                                      cache=DecisionCache(settings.decision_cache_size)
                                      if settings.decision_cache_size else None),
                        audit_store=audit_store,
                        signers=SignerSource(lambda: fetch_signers(opa)),
                        event_register=event_register,
                        audit_signer=audit_signer, concern_sign=concern_sign, ingest_process=ingest_process,
                        audit_process=audit_process, audit_anchor=audit_anchor,
                        events_reader=EventsReader(access, stage_group_prefix(stage) + "replays")
                        if stage in ("all", "route") else None)
    app: faust.App | None = None
    try:
        app = create_app(access, services, stage)
        run_faust(app, settings)
    finally:
        direct = getattr(app, "direct", None)
        if direct is not None:
            # A third of the grace period (Faust's stop has used some of it; if it used more than
            # two thirds, the grace timer ends the process first, which is as safe): committed
            # offsets never pass a record still queued here.
            left = direct.close(max(1.0, settings.shutdown_grace_s / 3))
            if left:
                log.warning("sends_unwritten_at_exit", records=left)
        for helper in (ingest_process, audit_process):
            if helper is not None:
                helper.close()
        if services.events_reader is not None:
            services.events_reader.close()


def _published_audit_head(settings: Settings, access: Any, stage: str) -> Any:
    """The newest validly signed head on sg.audit.heads: the audit stage signs on only while the
    store still holds it. Read again while Kafka cannot answer (a worker that cannot read it does
    not start signing without it)."""
    from bus.audit.heads import latest_head
    from bus.audit.signer import load_verifier, public_keys_path

    verifier = load_verifier(settings.audit_public_keys or public_keys_path(settings.home))
    backoff = 0.5
    while True:
        try:
            head = latest_head(access, verifier=verifier, group=f"{stage_group_prefix(stage)}heads")
            log.info("audit_anchor_read", seq=head.seq if head is not None else None)
            return head
        except StackError as exc:
            log.warning("audit_heads_unreadable", retry_in_s=backoff, cause=str(exc))
            time.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


def _concern_signer(settings: Settings, access: Any, stage: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The concern stage's signing key (it publishes like any source), and its table's changelog
    topic, which the stage creates within its own prefix (Faust is not allowed to declare topics)."""
    from bus.concern.agent import changelog_topic_name
    from bus.provenance.registry import LocalSigners, load_private_key
    from bus.topics import EVENTS_PARTITIONS, ensure_compacted_topic

    if ensure_compacted_topic(access, changelog_topic_name(stage_app_id(settings.app_id, stage)), EVENTS_PARTITIONS):
        log.info("concern_changelog_created")
    if settings.concern_signing_key is not None:
        return load_private_key(settings.concern_signing_key)
    return LocalSigners(settings.home).sign


#: exit status of a worker whose graceful stop overran its grace period
EXIT_STOP_OVERRAN = 3


SENTINEL_S = 0.1


class BoundedWorker(faust.Worker):
    """Faust's worker with a bounded stop: on SIGTERM or SIGINT it stops as Faust does, but if
    that has not finished within `grace_s` (Kafka unreachable: flushes and commits that never
    return) the process exits at once. Nothing unfinished is committed either way: offsets are
    committed only after a batch's records are sent, and an exactly-once stage's open
    transaction is aborted by the broker, so what was in flight is processed again."""

    grace_s: float = 15.0
    _grace_timer: threading.Timer | None = None

    def _arm_grace_timer(self) -> None:
        if self._grace_timer is None:
            self._grace_timer = threading.Timer(self.grace_s, _overran, args=(self.grace_s,))
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _schedule_shutdown(self, signal: Any) -> None:
        targets.stopping()  # asked to stop: leave Prometheus's targets on exit (a crash does not)
        self._arm_grace_timer()
        super()._schedule_shutdown(signal)

    def on_worker_shutdown(self) -> None:
        # Every way out, not only a signal: an agent's error that stops the worker (a send or
        # commit Kafka refused, say) must not leave it flushing into a broken Kafka for ever.
        self._arm_grace_timer()
        super().on_worker_shutdown()

    async def _sentinel_task(self) -> None:
        # mode sleeps a whole second here after the app has stopped (producer flushed, offsets
        # committed, connections closed), only to let the last callbacks run before the loop
        # closes: a tenth is ample, and every stop and rolling restart is shorter.
        await asyncio.sleep(SENTINEL_S)


def _overran(grace_s: float) -> None:
    log.error("stop_overran_grace", grace_s=grace_s)
    targets.leave()  # os._exit skips atexit
    os._exit(EXIT_STOP_OVERRAN)


def run_faust(app: faust.App, settings: Settings) -> None:
    """Run a Faust app in this process until SIGTERM/SIGINT (stopping within the grace period)."""
    # Faust creates its own loop; make sure one exists for this thread first.
    asyncio.set_event_loop(asyncio.new_event_loop())
    level = {"warning": "warn"}.get(settings.log_level, settings.log_level)
    worker = BoundedWorker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.grace_s = settings.shutdown_grace_s
    # Faust's progress spinner sets the root logger to DEBUG whenever the level is WARN or above,
    # so every aiokafka and Faust debug record was built and then dropped (seen in py-spy profiles).
    worker.spinner = None
    worker.execute_from_commandline()
