"""What differs between SQLite and PostgreSQL in the queue, behind one `Dialect` protocol.

The claim's lock, SKIP LOCKED, waking other hosts (NOTIFY) and hearing them
(LISTEN), counting a position, and one upsert: the SQLite and PostgreSQL
halves live in `queue.sqlite` and `queue.postgres`, and nothing else in
testqueue asks which database it runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, Subquery
from sqlalchemy.sql.dml import Insert

from testqueue.database import Conn, Database
from testqueue.queue import postgres, sqlite


class Dialect(Protocol):
    name: str

    def claiming(
        self, db: Database, worth: ColumnElement[bool] | None
    ) -> AbstractAsyncContextManager[Conn | None]:
        """A write transaction that holds the claim lock, or None when `worth`
        (a hint read before the lock) says there is nothing to take."""
        ...

    def skip_locked(self, stmt: Select[Any]) -> Select[Any]:
        """`stmt` passing over rows that other transactions hold."""
        ...

    def among(self, column: Any, ids: Select[Any]) -> ColumnElement[bool]:
        """`column` is one of the ids `ids` selects, with `ids` run once per statement."""
        ...

    async def notify(self, conn: Conn, payload: str = "") -> None:
        """Wake other hosts' dispatchers when this transaction commits."""
        ...

    async def listen(
        self, db: Database, on_notify: Callable[[str], None], stopping: asyncio.Event
    ) -> None:
        """Call `on_notify(payload)` for what other hosts announce, until `stopping`."""
        ...

    async def count_ahead(
        self, conn: Conn, priority: int, queued_at: datetime, execution_id: int
    ) -> tuple[int, tuple[Any, ...]]:
        """How many pending executions start before this pending one by priority and
        `queued_at` (aging and the policies aside), and the line's `order.SHAPE`."""
        ...

    def upsert(
        self,
        table: Any,
        keys: list[Any],
        columns: list[str],
        computed: Mapping[str, Any] | None = None,
    ) -> Insert:
        """INSERT ... ON CONFLICT (`keys`) DO UPDATE SET `columns` = the new values,
        and each of `computed` = its expression (which may read the row kept)."""
        ...

    def numbered(self) -> Subquery:
        """A list sent as parameters (`numbered_params`) read as a table: `n` each
        row's place in it, `case_id` and `priority` (None: the test case's)."""
        ...

    def numbered_params(self, rows: list[tuple[int, int | None]]) -> dict[str, Any]:
        """The parameters that `numbered` reads `rows` from."""
        ...


# The listener's own word: its channel was (re)opened, so every loop looks again.
RECONNECTED = postgres.RECONNECTED
# What a NOTIFY says when runs started or expired: live boards care, dispatchers do not.
BOARD_SIGNAL = "board"

SQLITE: Dialect = sqlite.SqliteDialect()
POSTGRES: Dialect = postgres.PostgresDialect()


def named(name: str) -> Dialect:
    """The dialect of this name (`sqlite` or `postgresql`)."""
    return SQLITE if name == SQLITE.name else POSTGRES


def of(db: Database) -> Dialect:
    """The dialect of `db`."""
    return SQLITE if db.is_sqlite else POSTGRES


def of_connection(conn: Conn) -> Dialect:
    """The dialect of an open connection."""
    return SQLITE if conn.dialect.name == "sqlite" else POSTGRES


async def signal(db: Database, conn: Conn, payload: str = "") -> None:
    """Wake other hosts' dispatchers when this transaction commits (NOTIFY on PostgreSQL)."""
    await of(db).notify(conn, payload)
