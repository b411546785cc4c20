"""The queue as a whole: status, statistics, active runs, workers, and admin switches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from testqueue import queue
from testqueue.api.deps import AdminActor, AppState, CurrentActor, Offset, State
from testqueue.models import Status
from testqueue.queue import status as queue_status
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    ActiveItem,
    Cleared,
    QueuedItem,
    QueueSettingsChange,
    QueueSettingsPublic,
    QueueStatistics,
    QueueStatus,
    WorkerPublic,
)

router = APIRouter(prefix="/executions/queue", tags=["queue"])


async def read_status(state: AppState, limit: int, offset: int) -> QueueStatus:
    settings = state.settings
    snap = await queue_status.snapshot(
        state.db, settings.max_concurrent_executions, settings.lease_ttl, limit, offset
    )
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


@router.get("/status")
async def queue_status_route(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> QueueStatus:
    """What runs and what waits, in order, with exact counts; the line is paginated."""
    return await read_status(state, limit, offset)


@router.get("/active")
async def active_executions(state: State, _actor: CurrentActor) -> list[ActiveItem]:
    """The running executions."""
    return (await read_status(state, 0, 0)).active


@router.get("/statistics")
async def queue_statistics(state: State, _actor: CurrentActor) -> QueueStatistics:
    """The dispatcher's switches and the counts of every status and result."""
    current = await read_status(state, 0, 0)
    by_status, results = await queue_status.counts_by(state.db)
    workers = await queue_status.workers(state.db, state.settings.lease_ttl)
    live = sum(1 for w in workers if w["live"])
    return QueueStatistics(
        is_running=live > 0 and not current.paused,
        paused=current.paused,
        max_concurrent=current.max_concurrent,
        check_interval=state.settings.queue_check_interval,
        queue_status=current.model_dump(
            include={"active_count", "queued_count", "max_concurrent", "is_under_limit"}
        ),
        executions_by_status={s.value: by_status.get(s.value, 0) for s in Status},
        results=results,
        live_workers=live,
    )


@router.get("/workers")
async def list_workers(state: State, _actor: CurrentActor) -> list[WorkerPublic]:
    """Workers seen lately: capacity, tags, what each runs, when each was last seen."""
    rows = await queue_status.workers(state.db, state.settings.lease_ttl)
    return [WorkerPublic.model_validate(row) for row in rows]


@router.post("/clear")
async def clear_queue(state: State, _admin: AdminActor) -> Cleared:
    """Cancel every pending execution in one transaction (admins only); running ones go on."""
    removed = await queue.clear(state.db)
    return Cleared(message=f"{removed} pending executions cancelled", removed_count=removed)


@router.post("/pause")
async def pause_queue(state: State, _admin: AdminActor) -> QueueSettingsPublic:
    """Stop starting new runs (admins only); pending ones keep their place."""
    await queue.set_paused(state.db, True)
    return await read_settings(state)


@router.post("/resume")
async def resume_queue(state: State, _admin: AdminActor) -> QueueSettingsPublic:
    """Start runs again (admins only)."""
    await queue.set_paused(state.db, False)
    return await read_settings(state)


@router.get("/settings")
async def queue_settings(state: State, _actor: CurrentActor) -> QueueSettingsPublic:
    """The global slots and whether the queue is paused."""
    return await read_settings(state)


@router.put("/settings")
async def change_queue_settings(
    state: State, body: QueueSettingsChange, _admin: AdminActor
) -> QueueSettingsPublic:
    """Change the global number of slots without a restart (admins only)."""
    await queue.set_max_concurrent(state.db, body.max_concurrent)
    return await read_settings(state)


async def read_settings(state: AppState) -> QueueSettingsPublic:
    default = state.settings.max_concurrent_executions
    async with state.db.read() as conn:
        slots, _running, _pending, paused = await queue_status.slots_and_counts(
            conn, default, count_pending=False
        )
        configured = await queue_status.configured_slots(conn, default)
    return QueueSettingsPublic(
        max_concurrent=slots, max_concurrent_default=configured, paused=paused
    )
