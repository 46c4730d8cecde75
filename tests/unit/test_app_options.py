"""Faust options: worker state stays under SGBUS_HOME; the fetch wait reaches aiokafka."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bus.app import faust_options
from bus.faust_kafka import App


def test_faust_data_goes_under_the_sgbus_home_not_the_working_directory(tmp_path: Path) -> None:
    opts = faust_options("127.0.0.1:9092", tmp_path / "home")
    app = App("sgbus-test", fetch_max_wait_ms=25, **opts)
    assert app.conf.datadir == (tmp_path / "home" / "faust" / "sgbus-test").resolve()
    assert (tmp_path / "home" / "faust").is_dir()  # Faust itself creates only the last level


def test_the_consumer_is_built_with_the_configured_fetch_wait(tmp_path: Path) -> None:
    app = App("sgbus-test", fetch_max_wait_ms=25, **faust_options("127.0.0.1:9092", tmp_path))

    async def build() -> Any:
        # aiokafka objects are created inside a running loop; nothing connects until start().
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        await consumer._client.close()
        return consumer

    assert asyncio.run(build())._fetch_max_wait_ms == 25
