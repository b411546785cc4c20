"""The live queue board: one broadcaster per process, however many tabs watch it.

Every open queue page holds a stream (`/events/queue`). None of them asks the
database anything: the process's broadcaster does, once per change, and hands
the result to all of them. It wakes when the queue may have changed:

- in this process, on `Wakeups.board_event` (set after every commit that
  queues, starts, ends, moves or stops a run, or flips a switch);
- from other processes on PostgreSQL, on their NOTIFY (it listens while
  anyone watches);
- from other processes on SQLite, which has no notifications, when the
  database's write-ahead log changed since it last looked (a `stat`, no query).

Then it reads the board's fingerprint (one statement) and, only when that
moved, the board itself; a burst of changes is read once per `MIN_GAP_S`.
Each viewer's message is rendered once per board and shared by that viewer's
tabs. With nobody watching, nothing runs at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from testqueue import sse
from testqueue.database import is_unavailable, sqlite_path
from testqueue.queue import dialect, outbox
from testqueue.scheduler import SIGNAL as SCHEDULES_SIGNAL
from testqueue.state import AppState, get_state
from testqueue.wakeups import first_of
from testqueue.web import board
from testqueue.web.session import Viewer

log = logging.getLogger(__name__)
# Running broadcasts, held so that the event loop does not lose them.
_background: set[asyncio.Task[None]] = set()

# At most one board read per this long, however fast changes come: under a busy queue,
# four boards a second per process, whatever the number of tabs.
MIN_GAP_S = 0.25
# How often the write-ahead log of a SQLite database is looked at for other processes' writes.
SQLITE_LOOK_S = 0.25
# How long the first read waits for PostgreSQL's LISTEN to be up (it reads anyway after).
LISTEN_WAIT_S = 2.0
# After the database could not be read, the next try.
RETRY_S = 1.0


@dataclass(eq=False)
class Watcher:
    """One open stream: who watches, whether there is news, and the board it last sent."""

    viewer: Viewer
    news: asyncio.Event = field(default_factory=asyncio.Event)
    seen: int = -1


class Broadcaster:
    """Reads the board when it changes and tells every watcher."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._watchers: set[Watcher] = set()
        self._lock = asyncio.Lock()
        self._version = 0
        self._mark: tuple[Any, ...] | None = None
        self._collected: board.Collected | None = None
        self._rendered: dict[tuple[int, bool], str] = {}
        # Set when the last watcher leaves: the running broadcast (and its listener) ends.
        self._idle = asyncio.Event()
        self.reads = 0  # boards read since the start (for the tests and the curious)

    @contextlib.asynccontextmanager
    async def watching(self, watcher: Watcher) -> AsyncIterator[None]:
        """While open, `watcher` is told at once (the board as it is now) and on every change."""
        watcher.news.set()
        self._watchers.add(watcher)
        if len(self._watchers) == 1:
            # Each broadcast has its own idle event: one winding down never stops the next.
            self._idle = asyncio.Event()
            # Nobody heard the changes since the last broadcast ended: what it read is stale.
            self._collected, self._mark = None, None
            task = asyncio.create_task(self._run(self._idle), name="live-board")
            _background.add(task)
            task.add_done_callback(_background.discard)
        try:
            yield
        finally:
            self._watchers.discard(watcher)
            if not self._watchers:
                self._idle.set()

    async def message(self, watcher: Watcher) -> str:
        """The board for this watcher when it has not seen it yet, else ""."""
        watcher.news.clear()
        if watcher.seen == self._version or self._collected is None:
            return ""
        watcher.seen = self._version
        key = (watcher.viewer.id, watcher.viewer.is_admin)
        text = self._rendered.get(key)
        if text is None:
            text = sse.message("queue", board.shown(self._collected, watcher.viewer))
            self._rendered[key] = text
        return text

    async def _refresh(self) -> bool:
        """Read the fingerprint and, when it moved, the board; whether it moved."""
        async with self._lock:
            mark = await board.fingerprint(self._state)
            if mark == self._mark and self._collected is not None:
                return False
            collected = await board.collect(self._state)
            self.reads += 1
            self._mark, self._collected = mark, collected
            self._version += 1
            self._rendered = {}
            return True

    async def _run(self, idle: asyncio.Event) -> None:
        """Until `idle`: wait for a change, read the board, tell the watchers."""
        state = self._state
        changed = state.db.wakeups.board_event
        # This broadcast's own: a listener of one winding down never speaks for the next.
        up = asyncio.Event()

        def heard(payload: str) -> None:
            if payload == dialect.RECONNECTED:
                up.set()
            self._heard(payload)

        listening = asyncio.create_task(
            dialect.of(state.db).listen(state.db, heard, idle), name="live-board-listen"
        )
        log_file = sqlite_path(state.settings.database_url)
        wal = None if log_file is None else f"{log_file}-wal"
        looked = _stamp(wal)
        try:
            if not state.db.is_sqlite:
                # The first read once LISTEN is up, so no change falls between the two.
                changed.clear()
                await first_of(up, idle, timeout=LISTEN_WAIT_S)
            changed.set()
            while not idle.is_set():
                await first_of(changed, idle, timeout=SQLITE_LOOK_S if wal else None)
                if idle.is_set():
                    break
                if not changed.is_set():
                    now = _stamp(wal)
                    if now == looked:
                        continue
                    looked = now
                changed.clear()
                await self._tell(idle)
                await first_of(idle, timeout=MIN_GAP_S)
        finally:
            idle.set()
            await asyncio.gather(listening, return_exceptions=True)

    async def _tell(self, idle: asyncio.Event) -> None:
        try:
            moved = await self._refresh()
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("the live board could not be read")
            else:
                log.warning("the live board could not be read: the database is away")
            await first_of(idle, timeout=RETRY_S)
            self._state.db.wakeups.changed()  # try again
            return
        if moved:
            for watcher in self._watchers:
                watcher.news.set()

    def _heard(self, payload: str) -> None:
        """A NOTIFY from another process (or a reopened channel): anything but webhook and
        schedule news may move the board."""
        if payload.startswith(outbox.SIGNAL_PREFIX) or payload == SCHEDULES_SIGNAL:
            return
        self._state.db.wakeups.changed()


def _stamp(path: str | None) -> tuple[int, int] | None:
    """When the file last changed and its size: a SQLite commit by any process moves it."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def broadcaster(connection: HTTPConnection) -> Broadcaster:
    """This app's broadcaster, made on first use."""
    app_state = connection.app.state
    found: Broadcaster | None = getattr(app_state, "live_board", None)
    if found is None:
        found = Broadcaster(get_state(connection))
        app_state.live_board = found
    return found
