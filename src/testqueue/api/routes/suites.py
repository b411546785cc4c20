"""Suites: named, saved selections of test cases (the rules are `services.suites`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import Offset
from testqueue.schemas import MAX_PAGE_SIZE
from testqueue.schemas.batches import SuiteCreate, SuitePage, SuitePublic, SuiteUpdate
from testqueue.services import suites
from testqueue.vocabulary import MAX_INT_ID

router = APIRouter(prefix="/suites", tags=["suites"])
SuiteId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]


@router.get("")
async def list_suites(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> SuitePage:
    """Suites by name."""
    return await suites.list_suites(state.db, limit, offset)


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(404, 409))
async def create_suite(state: State, body: SuiteCreate, actor: CurrentActor) -> SuitePublic:
    """Save a selection: test case ids (in order) and/or tags (any or all of them)."""
    await suites.selection(state.db, body.test_case_ids, (), body.tag_mode)
    return await suites.create_suite(state.db, body, actor)


@router.get("/{suite_id}", responses=errors(404))
async def read_suite(state: State, suite_id: SuiteId, _actor: CurrentActor) -> SuitePublic:
    """One suite."""
    return await suites.read_suite(state.db, suite_id)


@router.put("/{suite_id}", responses=errors(403, 404, 409))
async def update_suite(
    state: State, suite_id: SuiteId, body: SuiteUpdate, actor: CurrentActor
) -> SuitePublic:
    """Change the fields given: your own suite, or any for an admin."""
    return await suites.update_suite(state.db, suite_id, body, actor)


@router.delete("/{suite_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(403, 404))
async def delete_suite(state: State, suite_id: SuiteId, actor: CurrentActor) -> Response:
    """Delete a suite; its batches keep their runs and verdicts."""
    await suites.delete_suite(state.db, suite_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{suite_id}/selection", responses=errors(404))
async def suite_selection(
    state: State, suite_id: SuiteId, _actor: CurrentActor
) -> list[dict[str, int | str]]:
    """What the suite would run now, in order: `[{"id", "title"}]`."""
    suite = await suites.read_suite(state.db, suite_id)
    chosen = await suites.selection(state.db, suite.test_case_ids, suite.tags, suite.tag_mode)
    return [{"id": i, "title": title} for i, title in chosen]
