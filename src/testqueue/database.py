"""Engines, migrations and the in-process wake-up signal.

SQLite runs in WAL mode with one writer connection per process: writes queue
up on that connection in asyncio instead of spinning on the file lock, and
each write transaction starts with `BEGIN IMMEDIATE` so a read can never be
upgraded to a write behind another writer's back. Reads use their own pool.
PostgreSQL uses one pool for both; its locking lives in `queue.postgres`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from testqueue import sqlite_driver
from testqueue.config import Settings, worker_identity

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def async_url(database_url: str) -> URL:
    """The URL with the async driver this project uses for its dialect."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    return url.set(drivername="postgresql+psycopg")


def sync_url(database_url: str) -> URL:
    """The URL with the blocking driver, for migrations."""
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


def _tune_sqlite(engine: AsyncEngine, *, immediate: bool, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash; only power loss can
        # drop the last commits. SQLITE_SYNCHRONOUS=FULL is in docs/settings.md.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def application_name() -> str:
    """How this process's connections show in `pg_stat_activity`."""
    return f"testqueue:{worker_identity()}"[:63]


class Database:
    """The engines of one process and the signal that wakes its dispatcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_sqlite = settings.is_sqlite
        url = async_url(settings.database_url)
        if self.is_sqlite:
            path = sqlite_path(settings.database_url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            connect = sqlite_driver.creator(str(path) if path else ":memory:")
            self.writer = create_async_engine(
                url, async_creator=connect, pool_size=1, max_overflow=0, pool_timeout=60
            )
            self.reader = create_async_engine(
                url, async_creator=connect, pool_size=8, max_overflow=8
            )
            mode = settings.sqlite_synchronous
            _tune_sqlite(self.writer, immediate=True, synchronous=mode)
            _tune_sqlite(self.reader, immediate=False, synchronous=mode)
        else:
            self.writer = create_async_engine(
                url,
                pool_size=10,
                max_overflow=20,
                connect_args={"application_name": application_name()},
            )
            self.reader = self.writer
        self.wakeup = asyncio.Event()
        self.cancel_requests: set[int] = set()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on exit, rolled back on error."""
        async with self.writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction on a consistent snapshot."""
        async with self.reader.connect() as conn, conn.begin():
            yield conn

    def wake(self) -> None:
        """Wake this process's dispatcher; `queue` calls it after each commit that matters."""
        self.wakeup.set()

    def request_cancel(self, execution_id: int) -> None:
        """Tell this process's dispatcher to stop a run it may hold."""
        self.cancel_requests.add(execution_id)
        self.wakeup.set()

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).render_as_string(False))
    return config


def migrate(settings: Settings) -> None:
    """Bring the schema up to the newest revision (blocking; run before serving)."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), "head")
