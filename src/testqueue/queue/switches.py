"""The queue's switches, shared by every process: pause, the global slots, and clear."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select, update

from testqueue import audit
from testqueue.database import Database
from testqueue.models import QueueState, utcnow
from testqueue.queue import dialect, moves, outbox
from testqueue.vocabulary import CANCELLED_BY_CLEAR, Status


async def clear(db: Database, note: audit.Note | None = None) -> int:
    """Cancel every pending execution in one statement; running ones go on (invariant 8)."""
    now = utcnow()
    async with db.write() as conn:
        removed = await outbox.end_runs(
            conn,
            db,
            moves.move(
                Status.PENDING,
                Status.CANCELLED,
                completed_at=now,
                error_message=CANCELLED_BY_CLEAR,
            ),
            [outbox.CANCELLED],
        )
        if note is not None:
            await audit.write(conn, replace(note, detail={**note.detail, "removed": removed}))
        await dialect.signal(db, conn)
    return removed


async def _change_state(
    db: Database, note: audit.Note | None = None, event: str | None = None, **values: Any
) -> None:
    """Change the queue's switches for every worker, and wake them to look again."""
    async with db.write() as conn:
        await conn.execute(
            update(QueueState).where(QueueState.id == 1).values(**values, updated_at=utcnow())
        )
        await audit.write(conn, note)
        if event is not None:
            await outbox.record_queue(conn, db, event)
        await dialect.signal(db, conn)
    db.wakeups.wake()


async def set_paused(db: Database, paused: bool, note: audit.Note | None = None) -> None:
    """Pause (nothing new starts) or resume the queue for every worker."""
    await _change_state(db, note, outbox.PAUSED if paused else outbox.RESUMED, paused=paused)


async def declare_slots(db: Database, slots: int) -> int | None:
    """A starting worker's MAX_CONCURRENT_EXECUTIONS becomes every process's slots.

    The latest worker to start sets the number, so the global limit is one
    number even when hosts were started with different ones (an admin's
    runtime number still wins). Returns the different number it replaced.
    """
    async with db.read() as conn:
        before = (
            await conn.execute(select(QueueState.configured_slots).where(QueueState.id == 1))
        ).scalar_one_or_none()
    if before == slots:
        return None
    await _change_state(db, configured_slots=slots)
    return before


async def set_max_concurrent(
    db: Database, slots: int | None, note: audit.Note | None = None
) -> None:
    """Change the global number of slots at runtime; None returns to what workers started with."""
    await _change_state(db, note, max_concurrent=slots)
