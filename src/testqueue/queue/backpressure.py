"""Backpressure: past MAX_PENDING runs waiting (or MAX_PENDING_PER_USER of one user's), a
run or batch request is refused whole with 429, Retry-After and the depth.

The count and the insert are one transaction; on PostgreSQL an advisory lock
makes concurrent requests count one after another, so the limit is exact.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Integer, bindparam, func, literal, select, text

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Conn
from testqueue.models import Execution, LineCount
from testqueue.queue import estimates
from testqueue.queue.order import PENDING
from testqueue.vocabulary import HIGHEST_PRIORITY, LOWEST_PRIORITY

E = Execution
ENQUEUE_LOCK_KEY = 0x7465_7374_7165  # "testqe": one key for counted enqueues


def _user_pending() -> Any:
    """One user's pending runs: a range of `ix_executions_fair` per priority."""
    user = bindparam("u", type_=Integer)
    total: Any = literal(0)
    for p in range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1):
        total = (
            total
            + select(func.count())
            .where(PENDING, E.priority == p, E.user_id == user)
            .scalar_subquery()
        )
    return select(total)


_USER_PENDING = _user_pending()
_ALL_PENDING = {
    # SQLite keeps a count per priority (migration 0004); PostgreSQL counts the line's index.
    "sqlite": select(func.coalesce(func.sum(LineCount.pending), 0)),
    "postgresql": select(func.count()).where(PENDING),
}


def limited(settings: Settings) -> bool:
    return bool(settings.max_pending or settings.max_pending_per_user)


async def admit(conn: Conn, settings: Settings, user_id: int | None, adding: int) -> None:
    """Refuse (TooManyRequests) `adding` more runs that would pass a pending limit."""
    if not limited(settings):
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ENQUEUE_LOCK_KEY})
    depth = int((await conn.execute(_ALL_PENDING[conn.dialect.name])).scalar_one())
    if settings.max_pending and depth + adding > settings.max_pending:
        await _refuse(conn, settings, depth, settings.max_pending, "MAX_PENDING", depth, adding)
    if settings.max_pending_per_user and user_id is not None:
        mine = int((await conn.execute(_USER_PENDING, {"u": user_id})).scalar_one())
        if mine + adding > settings.max_pending_per_user:
            await _refuse(
                conn,
                settings,
                mine,
                settings.max_pending_per_user,
                "MAX_PENDING_PER_USER",
                depth,
                adding,
            )


async def _refuse(
    conn: Conn, settings: Settings, count: int, limit: int, name: str, depth: int, adding: int
) -> None:
    """429, with a wait long enough for the runs over the limit to start, by recent run times."""
    durations = await estimates.recent_durations(conn, [])
    run_s = durations.overall or estimates.UNKNOWN_RUN_S
    over = count + adding - limit
    wait_s = math.ceil(over * run_s / max(1, settings.max_concurrent_executions))
    whose = "in the queue" if name == "MAX_PENDING" else "of yours in the queue"
    raise errors.TooManyRequests(
        f"the queue is full: {count} runs wait {whose} ({name} is {limit}, "
        f"{depth} wait in all); {adding} more would pass it. Try again in about {wait_s} s, "
        "or cancel runs you no longer need",
        retry_after_s=wait_s,
    )
