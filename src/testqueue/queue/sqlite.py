"""SQLite: one writer at a time.

Every write transaction already starts with `BEGIN IMMEDIATE` on the process's
single writer connection (see `testqueue.database`), so the file lock itself
serialises claims across processes; nothing more is needed here. SQLAlchemy
drops `FOR UPDATE` on SQLite, so no query here pretends to lock rows.
"""

from __future__ import annotations

from sqlalchemy import Select

from testqueue.database import Conn


async def lock_line(conn: Conn) -> None:
    """The transaction already holds the database's write lock."""


def skip_locked(stmt: Select[tuple[int]]) -> Select[tuple[int]]:
    return stmt


async def notify(conn: Conn, payload: str = "") -> None:
    """Other processes on SQLite learn of changes by the safety-net poll and heartbeats."""
