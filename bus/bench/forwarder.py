"""The benchmark ceiling: one Faust agent forwarding ingress events unchanged to one topic."""

from __future__ import annotations

import faust

from bus.app import faust_options
from bus.settings import Settings
from bus.topics import ingress_topic
from schemas.envelope import Agency

FORWARD_TOPIC = "sg.bench.forward"
FORWARD_PARTITIONS = 4  # as sg.events, the pipe's first output


def create_forwarder(app_id: str, bootstrap: str) -> faust.App:
    """Same Faust options, raw serialisation and per-event stream as the ingest agent; no work."""
    app = faust.App(app_id, **faust_options(bootstrap))
    source = app.topic(*[ingress_topic(a) for a in Agency], key_serializer="raw", value_serializer="raw")
    out = app.topic(FORWARD_TOPIC, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="sgbus.bench.forward")
    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for ev in stream.events():
            await out.send(key=ev.message.key, value=ev.value)

    return app


def main() -> None:
    from bus.cli import resolve_endpoints
    from bus.worker import run_faust

    settings = Settings()
    bootstrap, _ = resolve_endpoints(settings)
    run_faust(create_forwarder(settings.app_id, bootstrap), settings)


if __name__ == "__main__":
    main()
