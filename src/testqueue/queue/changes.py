"""Changes people make to executions: cancel one, move one in the line, and cancel the
pending runs of a test case that goes away."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from testqueue import audit, errors
from testqueue.database import Conn, Database
from testqueue.models import Execution, utcnow
from testqueue.queue import dialect, moves, outbox
from testqueue.queue.positions import position_in
from testqueue.vocabulary import CANCELLED_PENDING, Status

E = Execution


async def _owned(conn: Conn, execution_id: int, owner_id: int | None) -> Any:
    """The row's status and owner; NotFound or Forbidden before any write."""
    row = (
        await conn.execute(
            select(E.status, E.user_id, E.cancel_requested, E.priority, E.queued_at).where(
                E.id == execution_id
            )
        )
    ).one_or_none()
    if row is None:
        raise errors.NotFound(f"execution {execution_id} does not exist")
    if owner_id is not None and row.user_id != owner_id:
        raise errors.Forbidden(f"execution {execution_id} belongs to another user")
    return row


async def cancel(
    db: Database,
    execution_id: int,
    owner_id: int | None = None,
    note: audit.Note | None = None,
) -> Status:
    """Cancel a pending execution now, or ask the worker of a running one to stop it.

    Returns the status the row has after the call. A running execution stays
    `running` until its worker has stopped the process: only then is its slot free.
    `note` goes to the audit trail when the canceller is not the run's owner.
    """
    async with db.write() as conn:
        row = await _owned(conn, execution_id, owner_id)
        if note is not None and row.user_id != note.actor_id:
            await audit.write(conn, note)
        if row.status == Status.PENDING:
            await moves.move_one(
                conn,
                execution_id,
                Status.PENDING,
                Status.CANCELLED,
                completed_at=utcnow(),
                error_message=CANCELLED_PENDING,
            )
            await outbox.record_runs(
                conn, db, lambda: E.id == execution_id, [outbox.CANCELLED], batches=True
            )
            outcome = Status.CANCELLED
        elif row.status == Status.RUNNING:
            await moves.move_one(
                conn, execution_id, Status.RUNNING, Status.RUNNING, cancel_requested=True
            )
            outcome = Status.RUNNING
        else:
            raise errors.InvalidTransition(
                f"execution {execution_id} is already {row.status}; "
                "only pending or running ones can be cancelled"
            )
        await dialect.signal(db, conn, f"cancel:{execution_id}")
    db.wakeups.request_cancel(execution_id)
    return outcome


async def set_priority(
    db: Database, execution_id: int, priority: int, owner_id: int | None = None
) -> int:
    """Move a pending execution in the line; returns its new position."""
    async with db.write() as conn:
        row = await _owned(conn, execution_id, owner_id)
        if row.status != Status.PENDING:
            raise errors.InvalidTransition(
                f"execution {execution_id} is {row.status}; only a pending one can change priority"
            )
        await moves.move_one(conn, execution_id, Status.PENDING, Status.PENDING, priority=priority)
        position = await position_in(conn, db, execution_id, priority, row.queued_at)
        await dialect.signal(db, conn)
    db.wakeups.wake()
    return position


async def cancel_pending_of(conn: Conn, db: Database, test_case_id: int, reason: str) -> int:
    """Cancel the pending runs of one test case, inside the caller's transaction (the caller
    calls `db.wakeups.wake()` once it commits)."""
    await dialect.signal(db, conn, dialect.BOARD_SIGNAL)
    return await outbox.end_runs(
        conn,
        db,
        moves.move(
            Status.PENDING,
            Status.CANCELLED,
            E.test_case_id == test_case_id,
            completed_at=utcnow(),
            error_message=reason,
        ),
        [outbox.CANCELLED],
    )
