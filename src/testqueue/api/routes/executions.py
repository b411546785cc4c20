"""Executions: queue runs, read their history, detail and log, change, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.responses import FileResponse, PlainTextResponse
from sqlalchemy import delete, func, select

from testqueue import artifacts, errors, queue
from testqueue.api.deps import ArtifactId, CurrentActor, ExecutionId, Offset, State, TestCaseId
from testqueue.api.views import (
    artifact_file,
    execution_detail,
    execution_rows,
    history_filters,
    load_execution,
)
from testqueue.models import Execution, ExecutionLog, Result, Status
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    MAX_ROW_ID,
    BulkQueued,
    BulkRunRequest,
    Cancelled,
    ExecutionPage,
    ExecutionPublic,
    PriorityChange,
    RunQueued,
    RunRequest,
)

router = APIRouter(prefix="/executions", tags=["executions"])

E = Execution
# How long a cancel request waits for the worker to confirm a running execution stopped.
CANCEL_CONFIRM_S = 2.0
CANCEL_POLL_S = 0.02


def _options(body: RunRequest) -> queue.RunOptions:
    return queue.RunOptions(
        priority=body.priority,
        browser=body.browser,
        environment=body.environment,
        base_url=body.base_url,
        triggered_by=body.triggered_by,
    )


def _queued(item: queue.Queued) -> RunQueued:
    return RunQueued(
        id=item.id,
        test_case_id=item.test_case_id,
        status=Status.PENDING,
        priority=item.priority,
        queue_position=item.queue_position,
        message=f"execution {item.id} queued at position {item.queue_position}",
    )


@router.post("/tests/{test_case_id}/run", status_code=status.HTTP_201_CREATED)
async def run_test_case(
    state: State,
    test_case_id: TestCaseId,
    actor: CurrentActor,
    body: Annotated[RunRequest | None, Body()] = None,
) -> RunQueued:
    """Queue one run; it is committed before this answers. Priority 1..10 or high/medium/low."""
    options = _options(body or RunRequest())
    (item,) = await queue.enqueue(state.db, [test_case_id], actor.id, options)
    return _queued(item)


@router.post("/bulk", status_code=status.HTTP_201_CREATED)
async def run_many(state: State, body: BulkRunRequest, actor: CurrentActor) -> BulkQueued:
    """Queue one run of each test case, in the order given, in one transaction."""
    items = await queue.enqueue(state.db, body.test_case_ids, actor.id, _options(body))
    return BulkQueued(
        executions=[_queued(item) for item in items], message=f"{len(items)} executions queued"
    )


@router.get("")
async def list_executions(
    state: State,
    _actor: CurrentActor,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    result: Result | None = None,
    test_case_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> ExecutionPage:
    """History, newest first, filtered by status, result, test case or user."""
    where = history_filters(status_, result, test_case_id, user_id)
    async with state.db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(E).where(*where))).scalar_one()
        items = await execution_rows(conn, where, limit, offset)
    return ExecutionPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{execution_id}")
async def read_execution(
    state: State, execution_id: ExecutionId, _actor: CurrentActor
) -> ExecutionPublic:
    """One execution with its timings, steps, artifacts and, while pending, its position."""
    return await execution_detail(state, execution_id)


@router.get("/{execution_id}/log", response_class=PlainTextResponse)
async def read_log(
    state: State, execution_id: ExecutionId, _actor: CurrentActor
) -> PlainTextResponse:
    """The captured output so far (stdout and stderr together; saved every heartbeat)."""
    async with state.db.read() as conn:
        await load_execution(conn, execution_id)
        content = (
            await conn.execute(
                select(ExecutionLog.content).where(ExecutionLog.execution_id == execution_id)
            )
        ).scalar_one_or_none()
    return PlainTextResponse(content or "")


@router.patch("/{execution_id}")
async def change_priority(
    state: State, execution_id: ExecutionId, body: PriorityChange, actor: CurrentActor
) -> ExecutionPublic:
    """Change the priority of a pending execution; it moves in the line at once."""
    await queue.set_priority(state.db, execution_id, body.priority, actor.owner_filter())
    return await execution_detail(state, execution_id)


@router.post("/{execution_id}/cancel")
async def cancel_execution(
    state: State, execution_id: ExecutionId, actor: CurrentActor
) -> Cancelled:
    """Cancel a pending execution, or stop a running one (within a second)."""
    now = await queue.cancel(state.db, execution_id, actor.owner_filter())
    if now == Status.RUNNING:
        now = await _await_stop(state, execution_id)
    message = {
        Status.CANCELLED: f"execution {execution_id} cancelled",
        Status.RUNNING: f"execution {execution_id} is being stopped by its worker",
    }.get(Status(now), f"execution {execution_id} ended as {now} before the cancel reached it")
    return Cancelled(id=execution_id, status=now, message=message)


async def _await_stop(state: State, execution_id: int) -> str:
    loop = asyncio.get_running_loop()
    until = loop.time() + CANCEL_CONFIRM_S
    while True:
        async with state.db.read() as conn:
            now = (await conn.execute(select(E.status).where(E.id == execution_id))).scalar_one()
        if now != Status.RUNNING or loop.time() >= until:
            return str(now)
        await asyncio.sleep(CANCEL_POLL_S)


@router.delete("/{execution_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_execution(
    state: State, execution_id: ExecutionId, actor: CurrentActor
) -> Response:
    """Delete a finished execution with its log, steps and artifacts."""
    async with state.db.write() as conn:
        row = await load_execution(conn, execution_id)
        if actor.owner_filter() is not None and row["user_id"] != actor.id:
            raise errors.Forbidden(f"execution {execution_id} belongs to another user")
        if row["status"] in (Status.PENDING, Status.RUNNING):
            raise errors.InvalidTransition(
                f"execution {execution_id} is {row['status']}: cancel it before deleting it"
            )
        await conn.execute(delete(E).where(E.id == execution_id))
    await asyncio.to_thread(artifacts.remove_execution_artifacts, state.settings, execution_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{execution_id}/artifacts/{artifact_id}")
async def read_artifact(
    state: State, execution_id: ExecutionId, artifact_id: ArtifactId, _actor: CurrentActor
) -> FileResponse:
    """Download a screenshot or trace of an execution."""
    path, row = await artifact_file(state, execution_id, artifact_id)
    return FileResponse(path, media_type=row.content_type, filename=row.name)
