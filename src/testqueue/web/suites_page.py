"""Suites in the dashboard: list, make, change, delete, see what one would run, run it.

The rules are `services.suites` and `services.batches`, as in the API.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.schemas.batches import BatchCreate, SuiteCreate, SuitePublic, SuiteUpdate
from testqueue.schemas.common import problem_text
from testqueue.services import batches, suites
from testqueue.state import get_state
from testqueue.vocabulary import MAX_INT_ID, TagMode, parse_id
from testqueue.web import forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

SuiteId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
RECENT_BATCHES = 10


@router.get("/suites")
async def list_suites(request: Request, viewer: CurrentViewer) -> Response:
    """Every suite, and a form for a new one."""
    found = await suites.list_suites(get_state(request).db, 500, 0)
    return page(request, "suites.html", viewer, found=found, values=_blank(), problem_text="")


def _blank() -> dict[str, str]:
    return {"name": "", "description": "", "test_case_ids": "", "tags": "", "tag_mode": "any"}


def _values(form: FormData) -> dict[str, str]:
    return {name: forms.text(form, name) for name in _blank()}


def _body(values: dict[str, str]) -> dict[str, Any]:
    """The suite fields the form's text describes; ids and tags split on commas or spaces."""
    ids = [parse_id(raw) for raw in re.split(r"[,\s]+", values["test_case_ids"]) if raw]
    if None in ids:
        raise errors.BadRequest("test case ids are whole numbers, separated by commas or spaces")
    return {
        "name": values["name"],
        "description": values["description"],
        "test_case_ids": ids,
        "tags": [t for t in re.split(r"[,\s]+", values["tags"]) if t],
        "tag_mode": values["tag_mode"] or TagMode.ANY.value,
    }


def _problem(exc: ValidationError) -> str:
    return problem_text(exc.errors()[0])


@router.post("/suites")
async def create_suite(request: Request, viewer: ChangingViewer) -> Response:
    """Make a suite from the form."""
    values = _values(await forms.read(request))
    state = get_state(request)
    try:
        body = SuiteCreate.model_validate(_body(values))
        await suites.selection(state.db, body.test_case_ids, (), body.tag_mode)
        suite = await suites.create_suite(state.db, body, viewer.actor)
    except ValidationError as exc:
        found = await suites.list_suites(state.db, 500, 0)
        return page(
            request, "suites.html", viewer, status_code=422,
            found=found, values=values, problem_text=_problem(exc),
        )  # fmt: skip
    return done(request, f"Suite {suite.name!r} saved.", f"/suites/{suite.id}")


async def _suite_page(
    request: Request, viewer: Viewer, suite: SuitePublic, *, status_code: int = 200, **extra: Any
) -> Response:
    state = get_state(request)
    chosen = await suites.selection(state.db, suite.test_case_ids, suite.tags, suite.tag_mode)
    recent = await batches.list_batches(state.db, RECENT_BATCHES, 0, suite_id=suite.id)
    values = {
        "name": suite.name,
        "description": suite.description,
        "test_case_ids": ", ".join(map(str, suite.test_case_ids)),
        "tags": ", ".join(suite.tags),
        "tag_mode": suite.tag_mode.value,
    }
    context = {"values": values, "problem_text": "", **extra}
    return page(
        request, "suite.html", viewer, status_code=status_code, suite=suite, chosen=chosen,
        batches=recent.items, editable=suites.may_edit(suite, viewer.actor), **context,
    )  # fmt: skip


@router.get("/suites/{suite_id:int}")
async def show_suite(request: Request, suite_id: SuiteId, viewer: CurrentViewer) -> Response:
    """A suite: what it would run now, its last batches with their verdicts, run it."""
    suite = await suites.read_suite(get_state(request).db, suite_id)
    return await _suite_page(request, viewer, suite)


@router.post("/suites/{suite_id:int}")
async def update_suite(request: Request, suite_id: SuiteId, viewer: ChangingViewer) -> Response:
    """Save changes to a suite (its owner, or an admin)."""
    values = _values(await forms.read(request))
    state = get_state(request)
    suite = await suites.read_suite(state.db, suite_id)
    try:
        changes = SuiteUpdate.model_validate(_body(values))
        saved = await suites.update_suite(state.db, suite_id, changes, viewer.actor)
    except (ValidationError, errors.InvalidInput) as exc:
        problem = _problem(exc) if isinstance(exc, ValidationError) else exc.message
        return await _suite_page(
            request, viewer, suite, status_code=422, values=values, problem_text=problem
        )
    return done(request, f"Suite {saved.name!r} saved.", f"/suites/{suite_id}")


@router.post("/suites/{suite_id:int}/delete")
async def delete_suite(request: Request, suite_id: SuiteId, viewer: ChangingViewer) -> Response:
    """Delete a suite (its owner, or an admin); its batches stay."""
    await forms.confirmed(request, "the suite should be deleted")
    await suites.delete_suite(get_state(request).db, suite_id, viewer.actor)
    return done(request, "Suite deleted.", "/suites")


@router.post("/suites/{suite_id:int}/run")
async def run_suite(request: Request, suite_id: SuiteId, viewer: ChangingViewer) -> Response:
    """Queue the suite as a batch, at the priority chosen."""
    form = await forms.read(request)
    body = BatchCreate(suite_id=suite_id, priority=forms.priority(form), triggered_by="dashboard")
    made = await batches.create_batch(get_state(request).db, body, viewer.actor)
    return done(
        request, made.message[0].upper() + made.message[1:] + ".", f"/batches/{made.batch.id}"
    )
