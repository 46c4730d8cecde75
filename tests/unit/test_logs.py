"""Logging never lets a library write what a worker sends or receives, whatever the level."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from mode.utils.logging import setup_logging

from bus import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in logs.LIBRARIES_NEVER_AT_DEBUG})
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_a_debug_log_level_never_lets_aiokafka_log_the_records_it_sends(restore_logging: None) -> None:
    logs.configure("debug")
    setup_logging(loglevel="DEBUG")  # as Faust's worker sets up the root logger at its start
    out = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(out))
    assert logging.getLogger().isEnabledFor(logging.DEBUG)  # the operator asked for debug, and gets it
    producer = logging.getLogger("aiokafka.producer.producer")
    # What aiokafka logs for every record it sends (aiokafka/producer/producer.py)
    producer.debug("Sending (key=%s value=%s) to %s", b"psn:child-token", b'{"name": "MARKER-CHILD"}', "tp")
    producer.info("a connection notice")
    assert "MARKER-CHILD" not in out.getvalue() and "psn:child-token" not in out.getvalue()
    assert "a connection notice" in out.getvalue()
    assert not logging.getLogger("faust.transport").isEnabledFor(logging.DEBUG)


def test_a_quieter_level_holds_for_the_libraries_too(restore_logging: None) -> None:
    logs.configure("warning")
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.INFO)
    assert logging.getLogger("aiokafka.conn").isEnabledFor(logging.WARNING)
