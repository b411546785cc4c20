"""Hearing that the server is stopping, so live streams end and let it stop.

On SIGTERM uvicorn stops accepting connections and then waits for every open
response to finish before it runs the lifespan shutdown. A Server-Sent Events
stream never finishes on its own, so without this a signed-in browser tab
would hold the server up for good. While the app runs, the signal handlers
uvicorn installed are wrapped: the wrapper sets `stopping` (the streams end
at their next tick) and hands the signal on unchanged. The lifespan's exit
puts the previous handlers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.requests import HTTPConnection

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


class StopSignal:
    """Set once the process is asked to stop, or when the app's lifespan ends."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._installed: dict[int, tuple[Handler, Handler]] = {}

    def install(self) -> None:
        """Wrap the current handlers of SIGINT and SIGTERM (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            # Only a Python handler is chained: with the default action the
            # process ends anyway, and SIG_IGN means someone wants it ignored.
            if not callable(previous):
                continue
            handler = self._wrap(loop, previous)
            signal.signal(sig, handler)
            self._installed[sig] = (handler, previous)

    def _wrap(self, loop: asyncio.AbstractEventLoop, previous: Handler) -> Handler:
        def on_signal(signum: int, frame: FrameType | None) -> Any:
            # A signal handler may interrupt the loop anywhere: only the
            # thread-safe call may touch it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.stopping.set)
            return previous(signum, frame)

        return on_signal

    def remove(self) -> None:
        """Put back the handlers `install` wrapped, unless someone replaced ours since."""
        self.stopping.set()
        for sig, (handler, previous) in self._installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
        self._installed.clear()


def stop_signal(connection: HTTPConnection) -> StopSignal:
    """The app's stop signal, which `create_app` keeps in the app state."""
    stop: StopSignal = connection.app.state.stop_signal
    return stop
