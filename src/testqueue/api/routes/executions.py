"""Executions: queue runs, read their history, detail and log, change, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import ArtifactId, ExecutionId, Offset, TestCaseId
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    BulkQueued,
    BulkRunRequest,
    Cancelled,
    ExecutionPage,
    ExecutionPublic,
    PriorityChange,
    RunQueued,
    RunRequest,
)
from testqueue.schemas.executions import AttemptPublic
from testqueue.services import executions, reports, runs
from testqueue.vocabulary import (
    MAX_EXECUTION_ID,
    MAX_INT_ID,
    HistoryStatus,
    Result,
)

router = APIRouter(prefix="/executions", tags=["executions"])


@router.post(
    "/tests/{test_case_id}/run",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": RunQueued, "description": "deduplicated: the equal run already waiting"},
        **errors(404, 409, 429),
    },
)
async def run_test_case(
    state: State,
    test_case_id: TestCaseId,
    actor: CurrentActor,
    response: Response,
    body: Annotated[RunRequest | None, Body()] = None,
) -> RunQueued:
    """Queue one run; it is committed before this answers. Priority 1..10 or high/medium/low.

    With `dedupe` (or the test case's), a pending run of the same test case,
    environment and base URL is answered (200, `deduplicated: true`) instead.
    """
    options = runs.options_of(body or RunRequest())
    (item,) = await runs.queue_runs(state.db, [test_case_id], actor, options)
    if item.deduplicated:
        response.status_code = status.HTTP_200_OK
    return item


@router.post("/bulk", status_code=status.HTTP_201_CREATED, responses=errors(404, 429))
async def run_many(state: State, body: BulkRunRequest, actor: CurrentActor) -> BulkQueued:
    """Queue one run of each test case, in the order given, in one transaction."""
    items = await runs.queue_runs(state.db, body.test_case_ids, actor, runs.options_of(body))
    return BulkQueued(executions=items, message=f"{len(items)} executions queued")


@router.get("")
async def list_executions(
    state: State,
    _actor: CurrentActor,
    status_: Annotated[
        HistoryStatus | None,
        Query(
            alias="status",
            description="a status, or `failed`: completed with fail, error or timeout",
        ),
    ] = None,
    result: Result | None = None,
    test_case_id: Annotated[int | None, Query(ge=1, le=MAX_INT_ID)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_INT_ID)] = None,
    batch_id: Annotated[int | None, Query(ge=1, le=MAX_EXECUTION_ID)] = None,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_EXECUTION_ID,
            description="only executions older than this id: the previous page's "
            "`next_before_id`; as fast at any depth as the first page",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> ExecutionPage:
    """History, newest first, filtered by status, result, test case, user or batch.

    Page by `before_id` (the previous page's `next_before_id`): each page costs
    the same however deep; `offset` still works, but a deep offset is slow, as
    the database skips the rows one by one. `total` is exact up to 10,000 matches.
    """
    where = executions.history_filters(status_, result, test_case_id, user_id, batch_id)
    return await executions.list_executions(state.db, where, limit, offset, before_id=before_id)


@router.get("/{execution_id}", responses=errors(404))
async def read_execution(
    state: State, execution_id: ExecutionId, _actor: CurrentActor
) -> ExecutionPublic:
    """One execution with its timings, steps, artifacts and, while pending, its position."""
    return await executions.execution_detail(state.db, state.settings, execution_id)


@router.get("/{execution_id}/log", response_class=PlainTextResponse, responses=errors(404))
async def read_log(
    state: State,
    execution_id: ExecutionId,
    _actor: CurrentActor,
    attempt: Annotated[
        int | None, Query(ge=1, le=10_000, description="default: the current")
    ] = None,
) -> PlainTextResponse:
    """The captured output so far (stdout and stderr together; saved every heartbeat)."""
    return PlainTextResponse(await executions.read_log(state.db, execution_id, attempt))


@router.get("/{execution_id}/attempts", responses=errors(404))
async def list_attempts(
    state: State, execution_id: ExecutionId, _actor: CurrentActor
) -> list[AttemptPublic]:
    """Every attempt of an execution, each with its outcome, steps, files and log's address."""
    return await executions.attempts(state.db, execution_id)


@router.get(
    "/{execution_id}/junit.xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}, **errors(404)},
)
async def execution_junit(
    state: State, execution_id: ExecutionId, _actor: CurrentActor
) -> Response:
    """One execution as JUnit XML."""
    report = await reports.execution_report(state.db, execution_id)
    return Response(report, media_type="application/xml")


@router.patch("/{execution_id}", responses=errors(403, 404, 409))
async def change_priority(
    state: State, execution_id: ExecutionId, body: PriorityChange, actor: CurrentActor
) -> ExecutionPublic:
    """Change the priority of a pending execution; it moves in the line at once."""
    await runs.change_priority(state.db, execution_id, body.priority, actor)
    return await executions.execution_detail(state.db, state.settings, execution_id)


@router.post("/{execution_id}/cancel", responses=errors(403, 404, 409))
async def cancel_execution(
    state: State, execution_id: ExecutionId, actor: CurrentActor
) -> Cancelled:
    """Cancel a pending execution, or stop a running one (within a second)."""
    now = await runs.cancel(state.db, execution_id, actor, confirm=True)
    return Cancelled(id=execution_id, status=now, message=runs.cancel_message(execution_id, now))


@router.delete(
    "/{execution_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(403, 404, 409)
)
async def delete_execution(
    state: State, execution_id: ExecutionId, actor: CurrentActor
) -> Response:
    """Delete a finished execution with its log, steps and artifacts."""
    await executions.delete_execution(state.db, state.settings, execution_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{execution_id}/artifacts/{artifact_id}", responses=errors(404))
async def read_artifact(
    state: State, execution_id: ExecutionId, artifact_id: ArtifactId, _actor: CurrentActor
) -> Response:
    """Download a screenshot or trace of an execution. 404 says why when it was not kept
    (ARTIFACT_MAX_RUN_BYTES) or while it is still being stored."""
    found = await executions.artifact_file(state.db, state.settings, execution_id, artifact_id)
    if isinstance(found.source, Path):
        return FileResponse(found.source, media_type=found.content_type, filename=found.name)
    headers = found.headers("attachment")
    return StreamingResponse(found.source, media_type=found.content_type, headers=headers)
