"""Test cases: what to run (the rules are `services.test_cases`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import Offset, TestCaseId
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    Tag,
    TestCaseCreate,
    TestCasePage,
    TestCasePublic,
    TestCaseUpdate,
)
from testqueue.services import test_cases

router = APIRouter(prefix="/tests", tags=["test cases"])


@router.get("")
async def list_test_cases(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
    search: Annotated[str | None, Query(max_length=200, description="in the title")] = None,
    runner: Annotated[str | None, Query(max_length=16)] = None,
    tag: Annotated[
        list[Tag] | None, Query(max_length=40, description="any of these tags (repeatable)")
    ] = None,
) -> TestCasePage:
    """Test cases, newest first, with an optional title search, runner and tags."""
    return await test_cases.list_cases(state.db, limit, offset, search, runner, tag or ())


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(403))
async def create_test_case(
    state: State, body: TestCaseCreate, actor: CurrentActor
) -> TestCasePublic:
    """Create a test case; `command` ones are for admins only."""
    return await test_cases.create_case(state.db, state.registry, body, actor)


@router.get("/{test_case_id}", responses=errors(404))
async def read_test_case(
    state: State, test_case_id: TestCaseId, _actor: CurrentActor
) -> TestCasePublic:
    """One test case."""
    return await test_cases.read_case(state.db, test_case_id)


@router.put("/{test_case_id}", responses=errors(403, 404, 409))
async def update_test_case(
    state: State, test_case_id: TestCaseId, body: TestCaseUpdate, actor: CurrentActor
) -> TestCasePublic:
    """Change the fields given; the others keep their values."""
    return await test_cases.update_case(state.db, state.registry, test_case_id, body, actor)


@router.delete(
    "/{test_case_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(403, 404, 409)
)
async def delete_test_case(state: State, test_case_id: TestCaseId, actor: CurrentActor) -> Response:
    """Delete a test case; its pending runs are cancelled, its history is kept."""
    await test_cases.delete_case(state.db, test_case_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
