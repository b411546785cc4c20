"""Schedules: batches queued on a cron expression (the rules are `services.schedules`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import Offset
from testqueue.schemas import MAX_PAGE_SIZE
from testqueue.schemas.schedules import (
    ScheduleCreate,
    SchedulePage,
    SchedulePublic,
    ScheduleUpdate,
)
from testqueue.services import schedules
from testqueue.vocabulary import MAX_INT_ID

router = APIRouter(prefix="/schedules", tags=["schedules"])
ScheduleId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(404))
async def create_schedule(
    state: State, body: ScheduleCreate, actor: CurrentActor
) -> SchedulePublic:
    """Queue `run` as a batch on every tick of `cron` in `timezone`, as you.

    The answer shows the next five ticks in UTC and in the zone.
    """
    return await schedules.create_schedule(state.db, body, actor)


@router.get("")
async def list_schedules(
    state: State,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> SchedulePage:
    """Your schedules by name (an admin's: everyone's), each with its next and last ticks."""
    return await schedules.list_schedules(state.db, actor, limit, offset)


@router.get("/{schedule_id}", responses=errors(403, 404))
async def read_schedule(
    state: State, schedule_id: ScheduleId, actor: CurrentActor
) -> SchedulePublic:
    """One schedule: the next five ticks, and the last batches with their verdicts."""
    return await schedules.read_schedule(state.db, schedule_id, actor)


@router.patch("/{schedule_id}", responses=errors(403, 404, 409))
async def update_schedule(
    state: State, schedule_id: ScheduleId, body: ScheduleUpdate, actor: CurrentActor
) -> SchedulePublic:
    """Change the fields given: your own schedule, or any for an admin."""
    return await schedules.update_schedule(state.db, schedule_id, body, actor)


@router.post("/{schedule_id}/pause", responses=errors(403, 404, 409))
async def pause_schedule(
    state: State, schedule_id: ScheduleId, actor: CurrentActor
) -> SchedulePublic:
    """Fire nothing until resumed."""
    return await schedules.pause_schedule(state.db, schedule_id, actor)


@router.post("/{schedule_id}/resume", responses=errors(403, 404, 409))
async def resume_schedule(
    state: State, schedule_id: ScheduleId, actor: CurrentActor
) -> SchedulePublic:
    """Fire again from the first tick after now; ticks passed while paused never fire."""
    return await schedules.resume_schedule(state.db, schedule_id, actor)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(403, 404))
async def delete_schedule(state: State, schedule_id: ScheduleId, actor: CurrentActor) -> Response:
    """Delete a schedule; the batches it queued stay."""
    await schedules.delete_schedule(state.db, schedule_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
