"""Batches that start when their first event arrives: Faust's take_events, but without its fixed
timer, so a quiet bus answers at once and an idle worker does not wake up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import faust
from mode.utils.futures import notify

#: the shortest window: what a batch waits for company at the lightest load
MIN_WINDOW_S = 0.001


def next_window(last: int, max_: int, window_s: float, min_window_s: float = MIN_WINDOW_S) -> float:
    """How long a batch waits after its first event: twice the last batch's share of a full
    one, times `window_s`, within [min_window_s, window_s]."""
    return max(min(min_window_s, window_s), window_s * min(1.0, 2.0 * last / max_))


def take_ready(stream: faust.StreamT[Any], max_: int, window_s: float, *,
               min_window_s: float = MIN_WINDOW_S, defer_acks: bool = False) -> AsyncIterator[list[faust.EventT[Any]]]:
    """Yield the stream's events in batches of at most `max_`: as soon as it is full, or a
    window after its first event arrived; the window follows the load (below).

    Why not `Stream.take_events(max_, within)`: its window is a timer that restarts when the
    previous batch is done, whether or not anything arrived, so at light load an event waits on
    average half a window for a timer that was already running, at every hop; and an idle worker
    wakes up every window. Here nothing waits until an event is there. Under load the batch still
    grows to `max_`: events that arrive while a batch is processed wait in the stream's queue
    and pour into the next one. A batch's events are acked once the caller asks for the next
    batch (i.e. after it processed this one), and never if the caller raised or was stopped first.
    `min_window_s` (at most `window_s`) for a stage whose cost is per batch rather than latency.
    With `defer_acks` the caller acks each batch's events itself (`stream.ack`), e.g. once a
    batch it holds while taking the next is finished.
    """
    agen = _take_ready(stream, max_, window_s, min(min_window_s, window_s), defer_acks)
    # As Faust does for its own buffering generators: the stream closes them when it stops.
    active: Any = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(agen)
    return agen


async def _take_ready(stream: faust.StreamT[Any], max_: int, window_s: float,
                      min_window_s: float, defer_acks: bool = False) -> AsyncGenerator[list[faust.EventT[Any]], None]:
    s: Any = stream  # Faust's Stream: the buffering hooks below are on it, not on StreamT
    events: list[faust.EventT[Any]] = []
    arrived = asyncio.Event()
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    enable_acks: bool = s.enable_acks
    loop = asyncio.get_running_loop()
    last = max_  # until the first batch shows the load, wait as long as allowed

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # a batch is being processed: wait for it, then start the next
                try:
                    await consuming
                finally:
                    consuming = None
            event = s.current_event
            if event is None:
                raise RuntimeError("take buffer found no current event")
            events.append(event)
            arrived.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await s.wait(consumed)  # never more than max_ in one batch
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # as Faust's own take: crash the stream, do not swallow
            s.log.exception("Error adding to take buffer: %r", exc)
            await s.crash(exc)
        return value

    s.enable_acks = False  # this generator acks, after the caller has processed the batch
    s.add_processor(add_to_buffer)
    s._enable_passive(aiter(s.channel))
    try:
        while not s.should_stop:
            if await s.wait_for_stopped(arrived):  # no timeout: an idle stream costs nothing
                break
            # The window follows the load: the last batch's size over the largest, doubled, of
            # window_s. A quiet stream (batches of one or two) waits ~1 ms; under load the
            # batches grow and the window with them, to full batches of max_.
            window = next_window(last, max_, window_s, min_window_s)
            if not full.is_set():
                await s.wait_for_stopped(full, timeout=window)
            if not events:  # pragma: no cover - arrived is only set with an event added
                arrived.clear()
                continue
            consuming = loop.create_future()
            batch = list(events)
            last = len(batch)
            done = False
            try:
                yield batch
                done = True  # the caller came back for more: it has processed this batch
            finally:
                events.clear()
                # Unlike Faust's take_events, a batch the caller did not finish (it raised, or the
                # agent was stopped mid-batch) is not acked: its offsets are never committed, so
                # the group hands it out again rather than skip it.
                if done and not defer_acks:
                    for event in batch:
                        await s.ack(event)
                notify(consuming)
                arrived.clear()
                full.clear()
                consumed.set()
    finally:
        # Stopped, or cancelled while waiting (a caller that gave up on the next batch): an
        # event's adder waiting for room or for the batch in process must not wait for ever.
        consumed.set()
        if consuming is not None:
            notify(consuming)
        s.enable_acks = enable_acks
        s._processors.remove(add_to_buffer)
