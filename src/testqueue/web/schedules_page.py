"""Schedules in the dashboard: list, make, change, pause, resume, delete.

The rules are `services.schedules`, as in the API; the form's text becomes
the same request body, and what is wrong with it is shown beside the form.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.schedule_times import CatchUp
from testqueue.schemas.common import problem_text
from testqueue.schemas.schedules import ScheduleCreate, SchedulePublic, ScheduleUpdate
from testqueue.services import schedules
from testqueue.state import get_state
from testqueue.vocabulary import MAX_INT_ID, TagMode, parse_id
from testqueue.web import forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ScheduleId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
LISTED = 500
# What a form can get wrong: shown beside the form rather than as an error page.
FORM_PROBLEMS = (ValidationError, errors.BadRequest, errors.InvalidInput, errors.NotFound)
SPLIT = re.compile(r"[,\s]+")


@router.get("/schedules")
async def list_schedules(request: Request, viewer: CurrentViewer) -> Response:
    """Your schedules (an admin's: all), and a form for a new one."""
    return await _list_page(request, viewer, _blank(), "")


async def _list_page(
    request: Request, viewer: Viewer, values: dict[str, str], problem: str, status_code: int = 200
) -> Response:
    found = await schedules.list_schedules(get_state(request).db, viewer.actor, LISTED, 0)
    return page(
        request, "schedules.html", viewer, status_code=status_code,
        found=found, values=values, problem_text=problem, catch_ups=list(CatchUp),
    )  # fmt: skip


def _blank() -> dict[str, str]:
    return {
        "name": "",
        "cron": "",
        "timezone": "UTC",
        "catch_up": CatchUp.NONE.value,
        "suite_id": "",
        "test_case_ids": "",
        "tags": "",
        "tag_mode": TagMode.ANY.value,
        "priority": "",
        "environment": "",
        "base_url": "",
    }


def _values(form: FormData) -> dict[str, str]:
    return {name: forms.text(form, name) for name in _blank()}


def _ids(raw: str, label: str) -> list[int]:
    ids = [parse_id(part) for part in SPLIT.split(raw) if part]
    if None in ids:
        raise errors.BadRequest(f"{label}: whole numbers, separated by commas or spaces")
    return [i for i in ids if i is not None]


def _body(values: dict[str, str]) -> dict[str, Any]:
    """The request body the form's text describes; empty fields are left out."""
    suite = _ids(values["suite_id"], "suite id")
    if len(suite) > 1:
        raise errors.BadRequest("suite id: give one suite")
    run: dict[str, Any] = {
        "suite_id": suite[0] if suite else None,
        "test_case_ids": _ids(values["test_case_ids"], "test case ids"),
        "tags": [tag for tag in SPLIT.split(values["tags"]) if tag],
        "tag_mode": values["tag_mode"] or TagMode.ANY.value,
    }
    for name in ("priority", "environment", "base_url"):
        if values[name]:
            run[name] = values[name]
    return {
        "name": values["name"],
        "cron": values["cron"],
        "timezone": values["timezone"] or "UTC",
        "catch_up": values["catch_up"] or CatchUp.NONE.value,
        "run": run,
    }


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return problem_text(exc.errors()[0])
    return str(getattr(exc, "message", exc))


@router.post("/schedules")
async def create_schedule(request: Request, viewer: ChangingViewer) -> Response:
    """Make a schedule from the form."""
    values = _values(await forms.read(request))
    state = get_state(request)
    try:
        body = ScheduleCreate.model_validate(_body(values))
        made = await schedules.create_schedule(state.db, body, viewer.actor)
    except FORM_PROBLEMS as exc:
        return await _list_page(request, viewer, values, _problem(exc), 422)
    return done(request, f"Schedule {made.name!r} saved.", f"/schedules/{made.id}")


def _values_of(schedule: SchedulePublic) -> dict[str, str]:
    run = schedule.run
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "catch_up": schedule.catch_up.value,
        "suite_id": str(run.suite_id or ""),
        "test_case_ids": ", ".join(map(str, run.test_case_ids)),
        "tags": ", ".join(run.tags),
        "tag_mode": run.tag_mode.value,
        "priority": str(run.priority or ""),
        "environment": run.environment or "",
        "base_url": run.base_url or "",
    }


async def _schedule_page(
    request: Request,
    viewer: Viewer,
    schedule: SchedulePublic,
    *,
    values: dict[str, str] | None = None,
    problem: str = "",
    status_code: int = 200,
) -> Response:
    return page(
        request, "schedule.html", viewer, status_code=status_code, schedule=schedule,
        values=values or _values_of(schedule), problem_text=problem, catch_ups=list(CatchUp),
        editable=schedules.may_edit(schedule, viewer.actor),
    )  # fmt: skip


@router.get("/schedules/{schedule_id:int}")
async def show_schedule(
    request: Request, schedule_id: ScheduleId, viewer: CurrentViewer
) -> Response:
    """One schedule: its next ticks, its last batches with their verdicts, its form."""
    schedule = await schedules.read_schedule(get_state(request).db, schedule_id, viewer.actor)
    return await _schedule_page(request, viewer, schedule)


@router.post("/schedules/{schedule_id:int}")
async def update_schedule(
    request: Request, schedule_id: ScheduleId, viewer: ChangingViewer
) -> Response:
    """Save changes to a schedule (its owner, or an admin)."""
    values = _values(await forms.read(request))
    db = get_state(request).db
    schedule = await schedules.read_schedule(db, schedule_id, viewer.actor)
    try:
        changes = ScheduleUpdate.model_validate(_body(values))
        saved = await schedules.update_schedule(db, schedule_id, changes, viewer.actor)
    except FORM_PROBLEMS as exc:
        return await _schedule_page(
            request, viewer, schedule, values=values, problem=_problem(exc), status_code=422
        )
    return done(request, f"Schedule {saved.name!r} saved.", f"/schedules/{schedule_id}")


@router.post("/schedules/{schedule_id:int}/pause")
async def pause_schedule(
    request: Request, schedule_id: ScheduleId, viewer: ChangingViewer
) -> Response:
    """Pause a schedule: it fires nothing until resumed."""
    await schedules.pause_schedule(get_state(request).db, schedule_id, viewer.actor)
    return done(request, "Schedule paused.", f"/schedules/{schedule_id}")


@router.post("/schedules/{schedule_id:int}/resume")
async def resume_schedule(
    request: Request, schedule_id: ScheduleId, viewer: ChangingViewer
) -> Response:
    """Resume a schedule from its next tick after now."""
    await schedules.resume_schedule(get_state(request).db, schedule_id, viewer.actor)
    return done(request, "Schedule resumed.", f"/schedules/{schedule_id}")


@router.post("/schedules/{schedule_id:int}/delete")
async def delete_schedule(
    request: Request, schedule_id: ScheduleId, viewer: ChangingViewer
) -> Response:
    """Delete a schedule (its owner, or an admin); its batches stay."""
    await forms.confirmed(request, "the schedule should be deleted")
    await schedules.delete_schedule(get_state(request).db, schedule_id, viewer.actor)
    return done(request, "Schedule deleted.", "/schedules")
