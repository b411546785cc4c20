"""Batches in the queue: many runs queued as one, and stopped as one.

A batch's status, counts and verdict are read off its executions
(`services.batches`); the queue only writes the batch row with its runs, in
one transaction, and cancels them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import insert, update

from testqueue import audit, errors
from testqueue.database import Conn, Database
from testqueue.models import Batch, Execution, utcnow
from testqueue.queue import backpressure, dialect, enqueue, moves, outbox
from testqueue.queue.enqueue import Queued, RunOptions
from testqueue.vocabulary import CANCELLED_PENDING, Status

E = Execution


@dataclass(frozen=True)
class NewBatch:
    """What a batch row says about where its runs came from."""

    name: str
    suite_id: int | None = None
    rerun_of: int | None = None


async def enqueue_batch(
    db: Database,
    batch: NewBatch,
    test_case_ids: Sequence[int],
    user_id: int | None,
    options: RunOptions,
    priorities: Sequence[int] | None = None,
) -> tuple[int, list[Queued]]:
    """A batch and one run per id (in the order given), in one transaction.

    `priorities`, when given, sets each run's own priority (a rerun keeps
    each one's, a step higher).
    """
    async with db.write() as conn:
        batch_id, queued = await write_batch(
            conn, db, batch, test_case_ids, user_id, options, priorities
        )
    db.wakeups.wake()
    return batch_id, queued


async def write_batch(
    conn: Conn,
    db: Database,
    batch: NewBatch,
    test_case_ids: Sequence[int],
    user_id: int | None,
    options: RunOptions,
    priorities: Sequence[int] | None = None,
) -> tuple[int, list[Queued]]:
    """`enqueue_batch` inside a transaction the caller holds (a schedule writes its fire row
    in the same one); the caller wakes the dispatcher after the commit."""
    if not test_case_ids:
        raise errors.NotFound("no test case matches what the batch names: nothing was queued")
    await backpressure.admit(conn, db.settings, user_id, len(test_case_ids))
    batch_id = (
        await conn.execute(
            insert(Batch)
            .values(
                name=batch.name,
                suite_id=batch.suite_id,
                rerun_of=batch.rerun_of,
                user_id=user_id,
                environment=options.environment,
                base_url=options.base_url,
                triggered_by=options.triggered_by,
                total=len(test_case_ids),
                created_at=utcnow(),
            )
            .returning(Batch.id)
        )
    ).scalar_one()
    options = replace(options, batch_id=batch_id)
    queued = await enqueue.queue_in(conn, test_case_ids, user_id, options, priorities, db=db)
    return int(batch_id), queued


async def cancel_batch(db: Database, batch_id: int, note: audit.Note | None = None) -> list[int]:
    """Cancel a batch: its pending runs now, its running ones by their workers (within a
    second). Returns the running ones asked to stop."""
    now = utcnow()
    async with db.write() as conn:
        # Its runs' rows are locked before its own, as a finishing worker locks them
        # (the run, then the batch for `batch.finished`): the other order could deadlock.
        stopping = await conn.execute(
            moves.keep(Status.RUNNING, E.batch_id == batch_id, cancel_requested=True).returning(
                E.id
            )
        )
        running = [row.id for row in stopping]
        await outbox.end_runs(
            conn,
            db,
            moves.move(
                Status.PENDING,
                Status.CANCELLED,
                E.batch_id == batch_id,
                completed_at=now,
                error_message=CANCELLED_PENDING,
            ),
            [outbox.CANCELLED],
        )
        marked = await conn.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )
        if marked.rowcount == 0:  # rolls back the rest with it
            raise errors.InvalidTransition(f"batch {batch_id} was cancelled already")
        await audit.write(conn, note)
        for execution_id in running:
            await dialect.signal(db, conn, f"cancel:{execution_id}")
    for execution_id in running:
        db.wakeups.request_cancel(execution_id)
    db.wakeups.wake()
    return running
