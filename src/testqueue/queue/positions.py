"""Positions in the line, counted when read, never stored (invariant 7)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from testqueue.database import Conn
from testqueue.models import Execution
from testqueue.queue import dialect
from testqueue.queue.order import PENDING

E = Execution


async def count_ahead(conn: Conn, priority: int, queued_at: datetime, execution_id: int) -> int:
    """How many pending executions start before this pending one."""
    return await dialect.of_connection(conn).count_ahead(conn, priority, queued_at, execution_id)


async def position_of(conn: Conn, execution_id: int) -> int | None:
    """1 = next to start; None when the execution is not pending."""
    row = (
        await conn.execute(select(E.priority, E.queued_at).where(E.id == execution_id, PENDING))
    ).one_or_none()
    if row is None:
        return None
    return await count_ahead(conn, row.priority, row.queued_at, execution_id) + 1
