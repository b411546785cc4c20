"""Engines and migrations.

SQLite runs in WAL mode with one writer connection per process: writes queue
up for it in asyncio instead of spinning on the file lock, and each write
transaction starts with `BEGIN IMMEDIATE` so a read can never be upgraded to
a write behind another writer's back. Reads use their own pool. Both run
inline on the loop's thread (`sqlite_driver`). PostgreSQL has an async pool
for transactions and an autocommit pool for reads, one-statement writes and
transactions its own code opens (the claim); its locking lives in
`queue.postgres`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import select
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import psycopg
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, NullPool, create_engine, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable

from testqueue import sqlite_driver
from testqueue.config import Settings, worker_identity
from testqueue.sqlite_driver import Rows
from testqueue.wakeups import Wakeups

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Read connections kept open between reads; more are opened when needed, never waited for.
SQLITE_READERS_KEPT = 8


class Conn(Protocol):
    """A connection, as the queue uses it: statements in, rows out.

    `AsyncConnection` on PostgreSQL, `sqlite_driver.InlineConnection` on SQLite.
    """

    @property
    def dialect(self) -> Dialect:
        """The database's SQLAlchemy dialect."""
        ...

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows:
        """Run one statement; the result is read like a blocking one."""
        ...


def async_url(database_url: str) -> URL:
    """The PostgreSQL URL with the async driver this project uses."""
    return make_url(database_url).set(drivername="postgresql+psycopg")


def sync_url(database_url: str) -> URL:
    """The URL with the blocking driver, for SQLite and for migrations."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite")
    return url.set(drivername="postgresql+psycopg")


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL, or None for PostgreSQL and in-memory SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _sqlite_engine(settings: Settings, **pool: Any) -> Engine:
    path = sqlite_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        sync_url(settings.database_url),
        creator=sqlite_driver.opener(str(path) if path else ":memory:"),
        **pool,
    )
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash; only power loss can
        # drop the last commits. SQLITE_SYNCHRONOUS=FULL is in docs/settings.md.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _refuse_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Hand out no pooled PostgreSQL connection the server has closed.

    An idle connection has nothing to read; one the server ended (a restart,
    a dropped link) is readable, with its goodbye or end of file. A look at
    the socket costs a system call, not a round trip, and SQLAlchemy answers
    `DisconnectionError` with a fresh connection.
    """
    raw = dbapi_conn.driver_connection
    try:
        readable, _, _ = select.select([raw.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error) as exc:
        raise DisconnectionError(str(exc)) from exc
    if readable:
        raise DisconnectionError("the server closed this pooled connection")


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (lost, restarting, locked)."""
    return isinstance(
        exc,
        OperationalError
        | InterfaceError
        | DisconnectionError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    )


def shown_url(database_url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(database_url).render_as_string(hide_password=True)


def application_name() -> str:
    """How this process's connections show in `pg_stat_activity`."""
    return f"testqueue:{worker_identity()}"[:63]


class Database:
    """The engines of one process, and the `Wakeups` of the dispatcher that shares them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_sqlite = settings.is_sqlite
        self.kind = "sqlite" if settings.is_sqlite else "postgresql"
        self.wakeups = Wakeups()
        # Upkeep started by a request but not part of its answer (`in_background`).
        self._background: set[asyncio.Task[None]] = set()
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        if self.is_sqlite:
            # One connection, taken in turn through `_write_turn`.
            self._sqlite_writer = _sqlite_engine(settings, pool_size=1, max_overflow=0)
            self._sqlite_reader = _sqlite_engine(
                settings, pool_size=SQLITE_READERS_KEPT, max_overflow=-1
            )
            self._write_turn = asyncio.Lock()
        else:
            url = async_url(settings.database_url)
            connect_args = {"application_name": application_name()}
            # Kept connections, and as many again under a burst (a connection opened past
            # the pool is closed when given back: PostgreSQL pays a process for each).
            size = settings.database_pool_size
            self._engine = create_async_engine(
                url, pool_size=size, max_overflow=size, connect_args=connect_args
            )
            # Under READ COMMITTED every statement reads its own snapshot, in a
            # transaction or not; without one a read is one round trip, not three.
            self._reader = create_async_engine(
                url,
                pool_size=size,
                max_overflow=size,
                connect_args=connect_args,
                isolation_level="AUTOCOMMIT",
            )
            for engine in (self._engine, self._reader):
                event.listen(engine.sync_engine, "checkout", _refuse_closed)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        """A write transaction: committed on exit, rolled back on error."""
        if self._engine is not None:
            async with self._engine.begin() as conn:
                yield conn
            return
        async with self._write_turn:
            with self._sqlite_writer.connect() as sync:
                await sqlite_driver.begin_immediate(cast(Any, sync.connection.driver_connection))
                with sync.begin():  # SQLAlchemy's half; pysqlite sends nothing for it
                    yield sqlite_driver.InlineConnection(sync)

    @asynccontextmanager
    async def write_one(self) -> AsyncIterator[Conn]:
        """For a write that is one statement, atomic on its own, and the reads after it.

        SQLite: a write transaction. PostgreSQL: no transaction, so the
        statement commits by itself without BEGIN and COMMIT round trips.
        """
        if self._reader is not None:
            async with self.autocommit() as conn:
                yield conn
            return
        async with self.write() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        """Reads. SQLite: one snapshot for the whole block. PostgreSQL: each
        statement sees what was committed when it started (READ COMMITTED)."""
        if self._reader is not None:
            async with self.autocommit() as conn:
                yield conn
            return
        with self._sqlite_reader.connect() as sync, sync.begin():
            cast(Any, sync.connection.driver_connection).execute("BEGIN")
            yield sqlite_driver.InlineConnection(sync)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: a pooled connection outside any transaction, for code that opens its own."""
        if self._reader is None:
            raise RuntimeError("autocommit connections are for PostgreSQL")
        async with self._reader.connect() as conn:
            yield conn

    async def connection_lost(self, conn: AsyncConnection) -> None:
        """After a lost connection that SQLAlchemy did not see (raw driver calls): drop it.

        The idle ones pooled with it are dropped as they are checked out
        (`_refuse_closed`); disposing of the pool here would strand the
        connections other tasks hold at this moment, never to be closed.
        """
        await conn.invalidate()

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the caller; `dispose` waits for it."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def dispose(self) -> None:
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._engine is not None and self._reader is not None:
            await self._engine.dispose()
            await self._reader.dispose()
        else:
            self._sqlite_writer.dispose()
            self._sqlite_reader.dispose()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).render_as_string(False))
    return config


def migrate(settings: Settings) -> None:
    """Bring the schema up to the newest revision (blocking; run before serving).

    A schema that is up to date costs one read and logs nothing.
    """
    path = sqlite_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(settings.database_url)
    newest = set(ScriptDirectory.from_config(config).get_heads())
    with _one_migrator(path):
        current = _current_revisions(settings.database_url)
        if current == newest:
            return
        command.upgrade(config, "head")
    log.info(
        "database migrated",
        extra={"from": ",".join(sorted(current)) or "empty", "to": ",".join(sorted(newest))},
    )


@contextlib.contextmanager
def _one_migrator(path: Path | None) -> Iterator[None]:
    """SQLite: one process at a time migrates a file (processes started together would
    each create the tables), by a lock on `<file>.lock` beside it. PostgreSQL's migrations
    take an advisory lock of their own (`migrations/env.py`)."""
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def _current_revisions(database_url: str) -> set[str]:
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
