"""Queue timeouts: a pending run that waited past its deadline ends `expired`, never started.

Each run's deadline (`expires_at`) is fixed when it is queued. Every worker's
expiry loop sleeps until the earliest deadline it knows of (its own enqueues
tell it at once, other hosts' by NOTIFY, the rest by the safety-net poll)
and then ends every run past it in one transaction. The claim never takes a
run past its deadline, so it cannot start in the moment between.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, func, select

from testqueue.database import Database
from testqueue.models import Execution, as_utc, utcnow
from testqueue.queue import dialect, moves, outbox
from testqueue.queue.order import PENDING
from testqueue.vocabulary import Status, expired_message

E = Execution
# What a NOTIFY says so other hosts' expiry loops look again.
DEADLINE_SIGNAL = "deadline"

_NEXT = select(func.min(E.expires_at)).where(PENDING, E.expires_at.is_not(None))
_DUE = select(E.id, E.queued_at, E.queue_timeout_s).where(
    PENDING, E.expires_at.is_not(None), E.expires_at <= bindparam("now", type_=E.expires_at.type)
)
_EXPIRE = moves.move(
    Status.PENDING,
    Status.EXPIRED,
    E.id == bindparam("x_id"),
    completed_at=bindparam("x_now"),
    error_message=bindparam("x_message"),
)


async def next_deadline(db: Database) -> datetime | None:
    """The earliest deadline of a pending run, if any has one."""
    async with db.read() as conn:
        found = (await conn.execute(_NEXT)).scalar_one_or_none()
    return as_utc(found) if found is not None else None


async def expire_due(db: Database) -> int:
    """End every pending run past its deadline; returns how many."""
    now = utcnow()
    async with db.write() as conn:
        due = (await conn.execute(_DUE, {"now": now})).all()
        if not due:
            return 0
        await conn.execute(
            _EXPIRE,
            [
                {
                    "x_id": row.id,
                    "x_now": now,
                    "x_message": expired_message(
                        (now - as_utc(row.queued_at)).total_seconds(), row.queue_timeout_s or 0
                    ),
                }
                for row in due
            ],
        )
        await outbox.record_runs(
            conn,
            db,
            lambda: and_(E.id.in_([row.id for row in due]), E.completed_at == now),
            [outbox.EXPIRED],
            batches=True,
        )
        await dialect.signal(db, conn, dialect.BOARD_SIGNAL)
    db.wakeups.changed()
    return len(due)
