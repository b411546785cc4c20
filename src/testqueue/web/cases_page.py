"""The test cases pages: list and search, create, edit, and run from the list.

Saving goes through the API's own route functions (called directly, not over
HTTP), so the dashboard applies exactly the API's rules: the schema, the
runner checks, and that only admins create or edit `command` test cases.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from testqueue import errors
from testqueue.api import views
from testqueue.api.deps import get_state
from testqueue.api.routes import tests as test_routes
from testqueue.models import Execution, User
from testqueue.schemas import TestCasePublic, TestCaseUpdate
from testqueue.web import case_form, forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 25
RECENT_RUNS_SHOWN = 10


def may_edit(case: TestCasePublic, viewer: Viewer) -> bool:
    """The API's rule (`tests.edit_refusal`)."""
    refusal = test_routes.edit_refusal(case.id, case.runner, case.created_by, viewer.actor)
    return refusal is None


def _runners(request: Request) -> list[str]:
    return sorted(test_routes.runner_kinds(get_state(request)))


async def _usernames(request: Request, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    async with get_state(request).db.read() as conn:
        rows = await conn.execute(select(User.id, User.username).where(User.id.in_(wanted)))
        return {row.id: row.username for row in rows}


@router.get("/tests")
async def list_test_cases(
    request: Request,
    viewer: CurrentViewer,
    q: Annotated[str, Query(max_length=200)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    """Test cases, newest first, searched by title, with a run button on each."""
    state = get_state(request)
    found = await test_routes.list_test_cases(
        state, viewer.actor, PAGE_SIZE, (page_number - 1) * PAGE_SIZE, q.strip() or None, None
    )
    return page(
        request,
        "tests.html",
        viewer,
        found=found,
        q=q,
        page_number=page_number,
        pages=max(1, -(-found.total // PAGE_SIZE)),
        owners=await _usernames(request, {case.created_by for case in found.items}),
    )


def _form_page(
    request: Request,
    viewer: Viewer,
    form: case_form.CaseForm,
    *,
    case: TestCasePublic | None = None,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    return page(
        request,
        "test_form.html",
        viewer,
        status_code=status_code,
        form=form,
        case=case,
        editable=case is None or may_edit(case, viewer),
        runners=_runners(request),
        test_types=case_form.TEST_TYPES,
        case_priorities=case_form.PRIORITIES,
        **extra,
    )


@router.get("/tests/new")
async def new_test_case(request: Request, viewer: CurrentViewer) -> Response:
    """An empty test case form."""
    return _form_page(request, viewer, case_form.CaseForm.blank())


@router.post("/tests/new")
async def create_test_case(request: Request, viewer: ChangingViewer) -> Response:
    """Create a test case; problems come back next to their fields."""
    form = case_form.CaseForm.submitted(await forms.read(request))
    try:
        body = case_form.to_body(form)
        created = await test_routes.create_test_case(get_state(request), body, viewer.actor)
    except case_form.FormProblems as exc:
        form.problems = exc.problems
        return _form_page(request, viewer, form, status_code=422)
    except (errors.InvalidInput, errors.Forbidden) as exc:
        form.problems = case_form.problem_of(exc.message)
        return _form_page(request, viewer, form, status_code=exc.status_code)
    log.info("test case created from the dashboard", extra={"test_case_id": created.id})
    return done(request, f"Test case #{created.id} created.", f"/tests/{created.id}")


async def _recent_runs(request: Request, test_case_id: int) -> list[Any]:
    async with get_state(request).db.read() as conn:
        return await views.execution_rows(
            conn, [Execution.test_case_id == test_case_id], RECENT_RUNS_SHOWN, 0
        )


@router.get("/tests/{test_case_id:int}")
async def show_test_case(
    request: Request, test_case_id: forms.RowId, viewer: CurrentViewer
) -> Response:
    """One test case: its form (read-only without the right to edit), a run button, its runs."""
    case = await test_routes.read_test_case(get_state(request), test_case_id, viewer.actor)
    return _form_page(
        request,
        viewer,
        case_form.CaseForm.of(case),
        case=case,
        runs=await _recent_runs(request, test_case_id),
    )


@router.post("/tests/{test_case_id:int}")
async def update_test_case(
    request: Request, test_case_id: forms.RowId, viewer: ChangingViewer
) -> Response:
    """Save changes to a test case; problems come back next to their fields."""
    state = get_state(request)
    case = await test_routes.read_test_case(state, test_case_id, viewer.actor)
    form = case_form.CaseForm.submitted(await forms.read(request))
    try:
        body = case_form.to_body(form)
        update = TestCaseUpdate.model_validate(body.model_dump())
        await test_routes.update_test_case(state, test_case_id, update, viewer.actor)
    except case_form.FormProblems as exc:
        form.problems = exc.problems
    except errors.InvalidInput as exc:
        form.problems = case_form.problem_of(exc.message)
    if form.problems:
        runs = await _recent_runs(request, test_case_id)
        return _form_page(request, viewer, form, case=case, status_code=422, runs=runs)
    return done(request, f"Test case #{test_case_id} saved.", f"/tests/{test_case_id:int}")
