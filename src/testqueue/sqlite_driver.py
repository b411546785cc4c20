"""SQLite, run inline on the event loop's own thread.

SQLite's own work for a queue statement is a few microseconds, and in WAL
mode a reader never waits for the writer, while this process has one writer
connection (see `database`). Handing each call to a helper thread (aiosqlite)
costs about a tenth of a millisecond, and SQLAlchemy's asyncio layer about
two thirds of what is left (a greenlet per statement), so SQLite statements
run through SQLAlchemy's blocking `Connection`, behind the one async method
the queue uses: `await conn.execute(...)`.

A writer that finds the write lock taken by another connection (another
process, or a second database object in this one) waits for it in asyncio,
never inside SQLite's busy handler, so the loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql.base import Executable

# How long a writer waits for another connection's write lock before giving up.
WRITE_LOCK_TIMEOUT_S = 30.0
WRITE_LOCK_FIRST_WAIT_S = 0.0005
WRITE_LOCK_MAX_WAIT_S = 0.02
# SQLite's own busy handler blocks the loop, so it only covers brief waits.
BUSY_TIMEOUT_MS = 50

# What `execute` gives back, any number of columns.
Rows = CursorResult[*tuple[Any, ...]]


class InlineConnection:
    """A blocking SQLAlchemy connection behind `Conn.execute`'s signature."""

    __slots__ = ("sync",)

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    @property
    def dialect(self) -> Dialect:
        return self.sync.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows:
        return self.sync.execute(statement, parameters)


async def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock, waiting in asyncio while another connection holds it.

    Waiting inside SQLite's busy handler would stop this loop, and with it a
    holder on the same loop (two databases in one process): a deadlock until
    the timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WRITE_LOCK_TIMEOUT_S
    delay = WRITE_LOCK_FIRST_WAIT_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, WRITE_LOCK_MAX_WAIT_S)


def opener(path: str) -> Callable[[], sqlite3.Connection]:
    """A `creator` for `create_engine`: connections SQLAlchemy never begins on its own."""

    def connect() -> sqlite3.Connection:
        # Only ever used on the loop's thread; migrations open their own engine.
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    return connect
