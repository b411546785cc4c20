"""aiosqlite's interface, run on the event loop's own thread.

aiosqlite hands every call to a helper thread and back: about a tenth of a
millisecond each on a small machine, tens of them per request. SQLite's own
work for a queue statement is a few microseconds, and in WAL mode a reader
never waits for the writer, while this process has one writer connection
(see `database`). So the calls run inline. A writer that finds the write
lock taken by another connection (another process, or a second database
object in this one) waits for it in asyncio, never inside SQLite's busy
handler, so the loop keeps running meanwhile.

SQLAlchemy's `sqlite+aiosqlite` dialect drives this through `async_creator`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# How long a writer waits for another connection's write lock before giving up.
WRITE_LOCK_TIMEOUT_S = 30.0
WRITE_LOCK_FIRST_WAIT_S = 0.0005
WRITE_LOCK_MAX_WAIT_S = 0.02
# SQLite's own busy handler blocks the loop, so it only covers brief waits.
BUSY_TIMEOUT_MS = 50


class _Cursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        if sql == "BEGIN IMMEDIATE":
            await _begin_immediate(self._cursor)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> _Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size or self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()


async def _begin_immediate(cursor: sqlite3.Cursor) -> None:
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
            cursor.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, WRITE_LOCK_MAX_WAIT_S)


class _Inline:
    """Stands in for aiosqlite's request queue: runs the call at once."""

    def __init__(self) -> None:
        pass

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class Connection:
    """The subset of `aiosqlite.Connection` SQLAlchemy's dialect uses."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _Inline()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def creator(path: str) -> Callable[[], Any]:
    """An `async_creator` for `create_async_engine` that opens `path` inline."""

    async def connect() -> Connection:
        # One connection is only ever used by one task at a time (the pool
        # hands it out), all on the loop's thread.
        return Connection(sqlite3.connect(path, check_same_thread=False, isolation_level=None))

    return connect
