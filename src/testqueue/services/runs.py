"""Queueing runs and stopping them, as people ask for it from the API or the dashboard.

The queue does the moves; this adds who may (members stop and move their own
runs, admins any) and what the answer says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select

from testqueue import errors, queue
from testqueue.database import Database
from testqueue.models import Batch, Execution
from testqueue.schemas import RunQueued, RunRequest
from testqueue.schemas.executions import RunFields
from testqueue.services.accounts import Actor
from testqueue.vocabulary import Status

# How long a cancel waits for the worker to confirm that a running execution stopped.
CANCEL_CONFIRM_S = 2.0
CANCEL_POLL_S = 0.02


def options_of(body: RunFields, triggered_by: str | None = None) -> queue.RunOptions:
    return queue.RunOptions(
        priority=body.priority,
        browser=body.browser,
        environment=body.environment,
        base_url=body.base_url,
        triggered_by=body.triggered_by or triggered_by,
        batch_id=body.batch_id if isinstance(body, RunRequest) else None,
        queue_timeout_s=body.queue_timeout_seconds,
        dedupe=body.dedupe if isinstance(body, RunRequest) else None,
    )


async def queue_runs(
    db: Database, test_case_ids: Sequence[int], actor: Actor, options: queue.RunOptions
) -> list[RunQueued]:
    """One run per test case id, in order, committed before this returns."""
    if options.batch_id is not None:
        await _may_join(db, options.batch_id, actor)
    return described(await queue.enqueue(db, test_case_ids, actor.id, options))


async def _may_join(db: Database, batch_id: int, actor: Actor) -> None:
    """A run may join a batch that exists, is not cancelled, and is the actor's (or any, admin)."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(Batch.user_id, Batch.cancelled_at).where(Batch.id == batch_id)
            )
        ).one_or_none()
    if row is None:
        raise errors.NotFound(f"batch {batch_id} does not exist")
    if row.cancelled_at is not None:
        raise errors.InvalidTransition(f"batch {batch_id} was cancelled: start a new one")
    if not (actor.is_admin or row.user_id == actor.id):
        raise errors.Forbidden(f"batch {batch_id} belongs to another user")


def described(items: Sequence[queue.Queued]) -> list[RunQueued]:
    """What the caller is told of runs just queued: ids, priorities and positions."""
    return [
        RunQueued(
            id=item.id,
            test_case_id=item.test_case_id,
            status=Status.PENDING,
            priority=item.priority,
            queue_position=item.queue_position,
            message=(
                f"execution {item.id} is already waiting at position {item.queue_position}; "
                "nothing new was queued"
                if item.deduplicated
                else f"execution {item.id} queued at position {item.queue_position}"
            ),
            deduplicated=item.deduplicated,
        )
        for item in items
    ]


async def cancel(db: Database, execution_id: int, actor: Actor, *, confirm: bool) -> str:
    """Cancel a pending execution, or stop a running one; returns the status it has now.

    With `confirm`, a running one is awaited until its worker has stopped it
    (up to CANCEL_CONFIRM_S), so the answer can say it is cancelled.
    """
    note = actor.note("execution.cancel", f"execution {execution_id}")
    now = await queue.cancel(db, execution_id, actor.owner_filter(), note)
    if now == Status.RUNNING and confirm:
        return await _await_stop(db, execution_id)
    return now


def cancel_message(execution_id: int, status: str) -> str:
    return {
        Status.CANCELLED: f"execution {execution_id} cancelled",
        Status.RUNNING: f"execution {execution_id} is being stopped by its worker",
    }.get(
        Status(status), f"execution {execution_id} ended as {status} before the cancel reached it"
    )


async def _await_stop(db: Database, execution_id: int) -> str:
    loop = asyncio.get_running_loop()
    until = loop.time() + CANCEL_CONFIRM_S
    statement = select(Execution.status).where(Execution.id == execution_id)
    while True:
        async with db.read() as conn:
            now = (await conn.execute(statement)).scalar_one()
        if now != Status.RUNNING or loop.time() >= until:
            return str(now)
        await asyncio.sleep(CANCEL_POLL_S)


async def change_priority(db: Database, execution_id: int, priority: int, actor: Actor) -> int:
    """Move a pending execution in the line; returns its new position."""
    return await queue.set_priority(db, execution_id, priority, actor.owner_filter())
