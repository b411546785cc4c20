"""Batches: many runs as one, with one verdict (the rules are `services.batches`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from testqueue import sse
from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import Offset
from testqueue.schemas import MAX_PAGE_SIZE
from testqueue.schemas.batches import (
    BatchCreate,
    BatchDetail,
    BatchPage,
    BatchPublic,
    BatchQueued,
    RerunRequest,
)
from testqueue.services import batches, reports
from testqueue.vocabulary import MAX_BIGINT, MAX_INT_ID

router = APIRouter(prefix="/batches", tags=["batches"])
BatchId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
XML = "application/xml"


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(400, 404, 429))
async def create_batch(state: State, body: BatchCreate, actor: CurrentActor) -> BatchQueued:
    """Queue a suite, the test cases with some tags, or a list of ids (any mix) as one batch.

    One transaction, in a stable order (the ids as given, then tagged test
    cases by id, each once); the answer has each execution's position.
    """
    return await batches.create_batch(state.db, body, actor)


@router.get("")
async def list_batches(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
    suite_id: Annotated[int | None, Query(ge=1, le=MAX_INT_ID)] = None,
) -> BatchPage:
    """Batches, newest first, each with its status, counts, progress and verdict."""
    return await batches.list_batches(state.db, limit, offset, suite_id)


@router.get("/{batch_id}", response_model=BatchDetail, responses=errors(404))
async def read_batch(state: State, batch_id: BatchId, _actor: CurrentActor) -> Response:
    """One batch with every execution in it."""
    return Response(await batches.batch_json(state.db, batch_id), media_type="application/json")


@router.post("/{batch_id}/cancel", responses=errors(403, 404, 409))
async def cancel_batch(state: State, batch_id: BatchId, actor: CurrentActor) -> BatchPublic:
    """Cancel its pending runs and stop its running ones (within a second)."""
    return await batches.cancel_batch(state.db, batch_id, actor)


@router.post(
    "/{batch_id}/rerun", status_code=status.HTTP_201_CREATED, responses=errors(404, 409, 429)
)
async def rerun_batch(
    state: State, batch_id: BatchId, actor: CurrentActor, body: RerunRequest | None = None
) -> BatchQueued:
    """A new batch of the failed (or all) test cases, linked to this one, one step higher."""
    return await batches.rerun(state.db, batch_id, body or RerunRequest(), actor)


@router.get(
    "/{batch_id}/junit.xml",
    response_class=Response,
    responses={200: {"content": {XML: {}}}, **errors(404)},
)
async def batch_junit(state: State, batch_id: BatchId, _actor: CurrentActor) -> Response:
    """The batch as JUnit XML: one `<testsuite>`, a `<testcase>` per execution."""
    return Response(await reports.batch_report(state.db, batch_id), media_type=XML)


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(404)},
)
async def batch_events(
    request: Request, state: State, batch_id: BatchId, _actor: CurrentActor
) -> StreamingResponse:
    """Server-Sent Events: a `batch` event whenever the batch changes, `end` once it ended."""
    await batches.read_batch(state.db, batch_id)
    last: list[Any] = []

    async def produce() -> str:
        summary = await batches.read_batch(state.db, batch_id)
        mark = summary.model_dump(mode="json")
        if last and last[0] == mark:
            return ""
        last[:] = [mark]
        ended = summary.verdict is not None
        return sse.message("batch", mark) + (sse.END if ended else "")

    return sse.stream(request, produce)
