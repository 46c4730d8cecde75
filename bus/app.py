"""Create the Faust app and wire the agents to the services they call."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from bus.audit.chain import AuditStore
from bus.metrics import Metrics
from bus.pseudonymise.keyring import Keyring
from bus.route import Router
from bus.settings import Settings


@dataclass
class Services:
    """Everything the agents need, built once per worker process."""

    settings: Settings
    keyring: Keyring
    metrics: Metrics
    router: Router
    audit_store: AuditStore


def create_app(bootstrap: str, services: Services) -> faust.App:
    app = faust.App(
        services.settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,  # topics are created explicitly by `sgbus stack up`
        topic_disable_leader=True,
        # at_least_once: Faust flushes the producer before committing offsets, so nothing is
        # lost; a crash may repeat a batch (the audit store keeps one record per decision).
        # exactly_once: two chained agents in one app never commit the first one's writes
        # (Kafka 4.4.0 and 3.9.1 alike; see README).
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    from bus.agents.pipeline import register  # agents register on import of their module

    register(app, services)
    return app
