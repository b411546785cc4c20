"""The test cases pages: list and search, create, edit, and run from the list.

Saving goes through `services.test_cases`, as the API's does, so the
dashboard applies exactly the same rules: the schema, the runner checks, and
that only admins create or edit `command` test cases.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from testqueue import errors
from testqueue.models import Execution
from testqueue.params import TestCaseId
from testqueue.schemas import TestCasePublic, TestCaseUpdate
from testqueue.services import executions, test_cases
from testqueue.state import get_state
from testqueue.vocabulary import PriorityWord, TestType
from testqueue.web import case_form, forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 25
RECENT_RUNS_SHOWN = 10


def _runners(request: Request) -> list[str]:
    return sorted(test_cases.runner_kinds(get_state(request).registry))


@router.get("/tests")
async def list_test_cases(
    request: Request,
    viewer: CurrentViewer,
    q: Annotated[str, Query(max_length=200)] = "",
    tag: Annotated[str, Query(max_length=40)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    """Test cases, newest first, searched by title or a tag, with a run button on each."""
    state = get_state(request)
    tags = [tag.strip()] if tag.strip() else []
    found = await test_cases.list_cases(
        state.db, PAGE_SIZE, (page_number - 1) * PAGE_SIZE, q.strip() or None, tags=tags
    )
    return page(
        request,
        "tests.html",
        viewer,
        found=found,
        q=q,
        tag=tag,
        page_number=page_number,
        pages=max(1, -(-found.total // PAGE_SIZE)),
        owners=await state.accounts.usernames({case.created_by for case in found.items}),
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
        editable=case is None
        or (case.archived_at is None and test_cases.may_edit(case, viewer.actor)),
        runners=_runners(request),
        test_types=[t.value for t in TestType],
        case_priorities=[p.value for p in PriorityWord],
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
        state = get_state(request)
        created = await test_cases.create_case(state.db, state.registry, body, viewer.actor)
    except case_form.FormProblems as exc:
        form.problems = exc.problems
        return _form_page(request, viewer, form, status_code=422)
    except (errors.InvalidInput, errors.Forbidden) as exc:
        form.problems = case_form.problem_of(exc.message)
        return _form_page(request, viewer, form, status_code=exc.status_code)
    log.info("test case created from the dashboard", extra={"test_case_id": created.id})
    return done(request, f"Test case #{created.id} created.", f"/tests/{created.id}")


async def _recent_runs(request: Request, test_case_id: int) -> list[Any]:
    where = [Execution.test_case_id == test_case_id]
    found = await executions.list_executions(get_state(request).db, where, RECENT_RUNS_SHOWN, 0)
    return found.items


@router.get("/tests/{test_case_id:int}")
async def show_test_case(
    request: Request, test_case_id: TestCaseId, viewer: CurrentViewer
) -> Response:
    """One test case: its form (read-only without the right to edit), a run button, its runs."""
    case = await test_cases.read_case(get_state(request).db, test_case_id)
    return _form_page(
        request,
        viewer,
        case_form.CaseForm.of(case),
        case=case,
        runs=await _recent_runs(request, test_case_id),
    )


@router.post("/tests/{test_case_id:int}")
async def update_test_case(
    request: Request, test_case_id: TestCaseId, viewer: ChangingViewer
) -> Response:
    """Save changes to a test case; problems come back next to their fields."""
    state = get_state(request)
    case = await test_cases.read_case(state.db, test_case_id)
    form = case_form.CaseForm.submitted(await forms.read(request))
    try:
        body = case_form.to_body(form)
        update = TestCaseUpdate.model_validate(body.model_dump())
        await test_cases.update_case(state.db, state.registry, test_case_id, update, viewer.actor)
    except case_form.FormProblems as exc:
        form.problems = exc.problems
    except errors.InvalidInput as exc:
        form.problems = case_form.problem_of(exc.message)
    if form.problems:
        runs = await _recent_runs(request, test_case_id)
        return _form_page(request, viewer, form, case=case, status_code=422, runs=runs)
    return done(request, f"Test case #{test_case_id} saved.", f"/tests/{test_case_id:int}")


@router.get("/tests/{test_case_id:int}/delete")
async def confirm_delete(
    request: Request, test_case_id: TestCaseId, viewer: CurrentViewer
) -> Response:
    """Ask before deleting (archiving) a test case."""
    state = get_state(request)
    case = await test_cases.read_case(state.db, test_case_id)
    if not test_cases.may_edit(case, viewer.actor) or case.archived_at is not None:
        raise errors.Forbidden(
            test_cases.edit_refusal(case.id, case.runner, case.created_by, viewer.actor)
            or f"test case {test_case_id} was deleted already"
        )
    pending = await test_cases.pending_runs(state.db, test_case_id)
    return page(request, "delete_case.html", viewer, case=case, pending=pending)


@router.post("/tests/{test_case_id:int}/delete")
async def delete_test_case(
    request: Request, test_case_id: TestCaseId, viewer: ChangingViewer
) -> Response:
    """Delete (archive) a test case after the confirmation; its pending runs are cancelled."""
    await forms.confirmed(request, "the test case should be deleted")
    cancelled = await test_cases.delete_case(get_state(request).db, test_case_id, viewer.actor)
    runs = "run" if cancelled == 1 else "runs"
    return done(
        request,
        f"Test case #{test_case_id} deleted; {cancelled} pending {runs} cancelled.",
        "/tests",
    )
