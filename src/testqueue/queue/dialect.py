"""Picks the SQLite or PostgreSQL half of the queue for a database."""

from __future__ import annotations

from types import ModuleType

from sqlalchemy.ext.asyncio import AsyncConnection

from testqueue.database import Database
from testqueue.queue import postgres, sqlite


def of(db: Database) -> ModuleType:
    return sqlite if db.is_sqlite else postgres


async def signal(db: Database, conn: AsyncConnection, payload: str = "") -> None:
    """Wake other hosts' dispatchers when this transaction commits (NOTIFY on PostgreSQL)."""
    await of(db).notify(conn, payload)
