"""Picks the SQLite or PostgreSQL half of the queue for a database."""

from __future__ import annotations

from types import ModuleType

from testqueue.database import Conn, Database
from testqueue.queue import postgres, sqlite


def of(db: Database) -> ModuleType:
    return sqlite if db.is_sqlite else postgres


async def signal(db: Database, conn: Conn, payload: str = "") -> None:
    """Wake other hosts' dispatchers when this transaction commits (NOTIFY on PostgreSQL)."""
    await of(db).notify(conn, payload)
