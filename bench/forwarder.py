"""The benchmark ceiling: one Faust agent forwarding ingress events unchanged to one topic."""

from __future__ import annotations

from pathlib import Path

import faust

from bus.app import faust_options
from bus.faust_kafka import App
from bus.security.kafka_access import KafkaAccess
from bus.security.principals import ADMIN, stage_app_id
from bus.security.resolve import kafka_access
from bus.settings import Settings
from bus.topics import ingress_topic
from schemas.envelope import Agency

FORWARD_TOPIC = "sg.bench.forward"
FORWARD_PARTITIONS = 4  # as sg.events, the pipe's first output


def create_forwarder(app_id: str, access: KafkaAccess, home: Path, fetch_max_wait_ms: int,
                     fetch_linger_ms: int = 0) -> faust.App:
    """Same Faust options (TLS and SCRAM included, the fetch wait and linger), raw serialisation
    and per-event stream as the ingest agent; no work. It runs as the admin: the ceiling is not a
    bus stage."""
    app = App(app_id, fetch_max_wait_ms=fetch_max_wait_ms, fetch_linger_ms=fetch_linger_ms,
              **faust_options(access, home))
    source = app.topic(*[ingress_topic(a) for a in Agency], key_serializer="raw", value_serializer="raw")
    out = app.topic(FORWARD_TOPIC, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="sgbench.forward")
    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for ev in stream.events():
            await out.send(key=ev.message.key, value=ev.value)

    return app


def main() -> None:
    from bus.cli_common import resolve_endpoints
    from bus.worker import run_faust

    settings = Settings()
    bootstrap, _ = resolve_endpoints(settings)
    access = kafka_access(settings, bootstrap, ADMIN)
    app = create_forwarder(stage_app_id(settings.app_id, "all"), access, settings.home, settings.fetch_max_wait_ms,
                           settings.fetch_linger_ms)
    run_faust(app, settings)


if __name__ == "__main__":
    main()
