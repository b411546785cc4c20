"""Server-Sent Events: streams that push state only when it changed, for the dashboard
and the API alike.

A stream is told when there may be news in one of two ways. The queue page
waits on its process's broadcaster (`web.live`), which hears every change to
the queue (in this process, and from other hosts by NOTIFY), builds the board
once and hands it to every open stream: an idle queue costs nothing however
many tabs watch it. Pages about one execution or one batch ask the database a
cheap question twice a second and send the full state only when the answer
moved. A stream ends when the
client goes away (Starlette cancels it), when the server is stopping (see
`shutdown`), and after `STREAM_MAX_S` in any case: the client reconnects on
its own, and that re-checks its credentials, so a disabled account stops
seeing updates within minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from testqueue import errors
from testqueue.database import is_unavailable
from testqueue.shutdown import stop_signal
from testqueue.wakeups import first_of

POLL_S = 0.5
KEEPALIVE_S = 15.0
STREAM_MAX_S = 300.0
RETRY_MS = 2000
PING = ": ping\n\n"

# Called once per tick; returns the events to send now ("" for nothing new).
Produce = Callable[[], Awaitable[str]]


def message(event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE event whose data is compact JSON (always a single line).

    With `event_id`, a browser that reconnects sends it back as Last-Event-ID.
    """
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# The last event of a stream whose subject will not change again; the page closes it.
END = message("end", {})


def stream(
    request: HTTPConnection,
    produce: Produce,
    news: asyncio.Event | None = None,
    around: contextlib.AbstractAsyncContextManager[Any] | None = None,
) -> StreamingResponse:
    """A text/event-stream response that calls `produce` until it should end: whenever
    `news` is set (`produce` clears it), or without `news` every `POLL_S`. `around` is
    entered while the stream is open (a subscription, say)."""
    stop = stop_signal(request)

    async def events() -> AsyncIterator[str]:
        async with around or contextlib.nullcontext():
            async for text in _ticks(stop.stopping, produce, news):
                yield text

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _ticks(
    stopping: asyncio.Event, produce: Produce, news: asyncio.Event | None
) -> AsyncIterator[str]:
    """What one stream sends, until it should end."""
    loop = asyncio.get_running_loop()
    until = loop.time() + STREAM_MAX_S
    quiet_since = loop.time()
    yield f"retry: {RETRY_MS}\n\n"
    while loop.time() < until and not stopping.is_set():
        try:
            text = await produce()
        except errors.NotFound:
            # Deleted while watched: nothing more will come, so say so and end.
            yield END
            return
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            text = ""  # the database is away for a moment: look again next tick
        if text:
            quiet_since = loop.time()
            yield text
        elif loop.time() - quiet_since >= KEEPALIVE_S:
            # A write is how a vanished client is noticed on servers that
            # do not report disconnects; proxies also drop silent streams.
            quiet_since = loop.time()
            yield PING
        if text.endswith(END):
            return
        left = min(until - loop.time(), KEEPALIVE_S - (loop.time() - quiet_since))
        if news is None:
            left = min(left, POLL_S)
        await first_of(stopping, *([news] if news else []), timeout=max(0.0, left))
