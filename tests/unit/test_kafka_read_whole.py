"""Reading a topic to its end: a caller deciding from all of it never gets a part of it."""

from __future__ import annotations

from typing import Any

import pytest

from bus import kafka_io
from bus.exceptions import StackError


class _EndlessConsumer:
    """A partition whose end is never reached within the time given (a slow or busy broker)."""

    def __init__(self) -> None:
        self.offset = 0

    def assign(self, _partitions: Any) -> None:
        pass

    def poll(self, _timeout: float) -> Any:
        self.offset += 1
        offset = self.offset

        class _Msg:
            def error(self) -> None:
                return None

            def partition(self) -> int:
                return 0

            def offset(self) -> int:
                return offset

            def key(self) -> None:
                return None

            def value(self) -> bytes:
                return b"{}"

        return _Msg()

    def close(self) -> None:
        pass


def test_a_read_that_must_be_whole_fails_rather_than_return_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: `replay --failed` read sg.dlq and sg.replay for 10 s and decided from
    whatever it had; a pending replay missed was replayed again (delivered twice)."""
    monkeypatch.setattr(kafka_io, "committed_reader", lambda *_a, **_k: _EndlessConsumer())
    monkeypatch.setattr(kafka_io, "partitions_of", lambda *_a: [0])
    with pytest.raises(StackError, match=r"could not read sg\.replay to its end"):
        kafka_io.read_placed(None, "sg.replay", timeout_s=0.3, whole=True)  # type: ignore[arg-type]
    assert kafka_io.read_placed(None, "sg.replay", timeout_s=0.3)  # type: ignore[arg-type]  # a snapshot may be partial
