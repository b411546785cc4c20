"""The queue as a whole: status, statistics, active runs, workers, and admin switches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from testqueue.api.contract import errors
from testqueue.api.deps import AdminActor, CurrentActor, State
from testqueue.params import Offset
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    ActiveExecutions,
    Cleared,
    QueueSettingsChange,
    QueueSettingsPublic,
    QueueStatistics,
    QueueStatus,
    WorkerPublic,
)
from testqueue.services import overview

router = APIRouter(prefix="/executions/queue", tags=["queue"])


@router.get("/status")
async def queue_status(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> QueueStatus:
    """What runs and what waits, in order, with exact counts; the line is paginated."""
    return await overview.read_status(state.db, state.settings, limit, offset)


@router.get("/active")
async def active_executions(state: State, _actor: CurrentActor) -> ActiveExecutions:
    """The running executions, with how many there are and may be."""
    status = await overview.read_status(state.db, state.settings, 0, 0)
    return ActiveExecutions(
        active_count=status.active_count,
        max_concurrent=status.max_concurrent,
        executions=status.active,
    )


@router.get("/statistics")
async def queue_statistics(state: State, _actor: CurrentActor) -> QueueStatistics:
    """The dispatcher's switches and the counts of every status and result.

    Exact and over every execution in the database (no time window): finished ones are
    counted as they finish, in the same transaction, and kept in the database; waiting
    and running ones are counted from their indexes. Deleted history leaves the counts.
    """
    return await overview.statistics(state.db, state.settings)


@router.get("/workers")
async def list_workers(state: State, _actor: CurrentActor) -> list[WorkerPublic]:
    """Workers seen lately: capacity, tags, what each runs, when each was last seen."""
    return await overview.workers(state.db, state.settings)


@router.post("/clear", responses=errors(403))
async def clear_queue(state: State, admin: AdminActor) -> Cleared:
    """Cancel every pending execution in one transaction (admins only); running ones go on."""
    removed = await overview.clear(state.db, admin)
    return Cleared(message=f"{removed} pending executions cancelled", removed_count=removed)


@router.post("/pause", responses=errors(403))
async def pause_queue(state: State, admin: AdminActor) -> QueueSettingsPublic:
    """Stop starting new runs (admins only); pending ones keep their place."""
    await overview.set_paused(state.db, admin, True)
    return await overview.read_settings(state.db, state.settings)


@router.post("/resume", responses=errors(403))
async def resume_queue(state: State, admin: AdminActor) -> QueueSettingsPublic:
    """Start runs again (admins only)."""
    await overview.set_paused(state.db, admin, False)
    return await overview.read_settings(state.db, state.settings)


@router.get("/settings")
async def queue_settings(state: State, _actor: CurrentActor) -> QueueSettingsPublic:
    """The global slots and whether the queue is paused."""
    return await overview.read_settings(state.db, state.settings)


@router.put("/settings", responses=errors(403))
async def change_queue_settings(
    state: State, body: QueueSettingsChange, admin: AdminActor
) -> QueueSettingsPublic:
    """Change the global number of slots without a restart (admins only)."""
    await overview.set_slots(state.db, admin, body.max_concurrent)
    return await overview.read_settings(state.db, state.settings)
