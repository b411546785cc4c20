"""SQLite: one writer at a time.

Every write transaction already starts with `BEGIN IMMEDIATE` on the process's
single writer connection (see `testqueue.database`), so the file lock itself
serialises claims across processes; nothing more is needed here. SQLAlchemy
drops `FOR UPDATE` on SQLite, so no query here pretends to lock rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import ColumnElement, Select

from testqueue.database import Conn, Database


@asynccontextmanager
async def claiming(db: Database, worth: ColumnElement[bool] | None) -> AsyncIterator[Conn | None]:
    """A write transaction: it already holds the database's write lock.

    `worth` is not looked at: with one writer the look would cost as much as the claim.
    """
    async with db.write() as conn:
        yield conn


def skip_locked(stmt: Select[tuple[int]]) -> Select[tuple[int]]:
    return stmt


async def notify(conn: Conn, payload: str = "") -> None:
    """Other processes on SQLite learn of changes by the safety-net poll and heartbeats."""
