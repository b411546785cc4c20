"""The queue as people read it: status with positions and reasons, statistics, workers,
and the switches an admin flips."""

from __future__ import annotations

from testqueue import queue
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.queue import counts as queue_counts
from testqueue.queue import status as queue_status
from testqueue.schemas import (
    ActiveItem,
    QueuedItem,
    QueueSettingsPublic,
    QueueStatistics,
    QueueStatus,
    WorkerPublic,
)
from testqueue.services.accounts import Actor
from testqueue.vocabulary import Status


async def read_status(db: Database, settings: Settings, limit: int, offset: int) -> QueueStatus:
    """What runs and what waits, in order, with exact counts; the line is paginated."""
    snap = await queue_status.snapshot(db, limit, offset)
    return QueueStatus(
        active_count=snap.active_count,
        queued_count=snap.queued_count,
        max_concurrent=snap.max_concurrent,
        is_under_limit=snap.active_count < snap.max_concurrent,
        paused=snap.paused,
        limit=limit,
        offset=offset,
        queue=[QueuedItem.model_validate(row) for row in snap.queue],
        active=[ActiveItem.model_validate(row) for row in snap.active],
    )


async def statistics(db: Database, settings: Settings) -> QueueStatistics:
    """The dispatcher's switches and the counts of every status and result.

    Finished executions are counted as they finish (kept tallies, migration
    0011) and the waiting and running ones from their indexes, so the answer
    costs the same at a million finished rows as at ten, and is exact.
    """
    counts = await queue_counts.read(db)
    by_status = counts.by_status()
    under = counts.running < counts.slots
    return QueueStatistics(
        is_running=counts.live_workers > 0 and not counts.paused,
        paused=counts.paused,
        max_concurrent=counts.slots,
        check_interval=settings.queue_check_interval,
        queue_status={
            "active_count": counts.running,
            "queued_count": counts.pending,
            "max_concurrent": counts.slots,
            "is_under_limit": under,
        },
        executions_by_status={s.value: by_status.get(s.value, 0) for s in Status},
        results=counts.by_result(),
        live_workers=counts.live_workers,
    )


async def workers(db: Database, settings: Settings) -> list[WorkerPublic]:
    """Workers seen lately: capacity, tags, what each runs, when each was last seen."""
    rows = await queue_status.workers(db, settings.lease_ttl)
    return [WorkerPublic.model_validate(row) for row in rows]


async def pending_count(db: Database, settings: Settings) -> int:
    async with db.read() as conn:
        _slots, _running, pending, _paused = await queue_status.slots_and_counts(
            conn, settings.max_concurrent_executions
        )
    return pending


async def read_settings(db: Database, settings: Settings) -> QueueSettingsPublic:
    """The global slots in force and without an admin's number, and the pause switch."""
    default = settings.max_concurrent_executions
    async with db.read() as conn:
        slots, _running, _pending, paused = await queue_status.slots_and_counts(
            conn, default, count_pending=False
        )
        configured = await queue_status.configured_slots(conn, default)
    return QueueSettingsPublic(
        max_concurrent=slots, max_concurrent_default=configured, paused=paused
    )


async def clear(db: Database, actor: Actor) -> int:
    """Cancel every pending execution (admins only); returns how many."""
    actor.require_admin()
    return await queue.clear(db, actor.note("queue.clear"))


async def set_paused(db: Database, actor: Actor, paused: bool) -> None:
    actor.require_admin()
    await queue.set_paused(db, paused, actor.note("queue.pause" if paused else "queue.resume"))


async def set_slots(db: Database, actor: Actor, slots: int | None) -> None:
    """The global slots at runtime (admins only); None returns to MAX_CONCURRENT_EXECUTIONS."""
    actor.require_admin()
    await queue.set_max_concurrent(db, slots, actor.note("queue.slots", slots=slots))
