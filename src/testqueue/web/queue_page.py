"""The queue page and what can be done from it: run, cancel, move, clear, change the slots.

Rights are the API's: anyone signed in may run any test case; members cancel
and move their own executions (the queue functions check the owner); only
admins clear the queue, pause it or change the slots. The page hides controls
a viewer may not use, and these routes refuse them anyway.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from testqueue import errors, queue
from testqueue.api.deps import get_state
from testqueue.api.routes import queue_routes
from testqueue.models import TestCase
from testqueue.queue import status as queue_status
from testqueue.web import board, forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

RUN_CHOICES_SHOWN = 500
MAX_SLOTS = 1000


def _admin_only(viewer: Viewer) -> None:
    if not viewer.is_admin:
        raise errors.Forbidden("only an admin may do this")


async def _run_choices(request: Request) -> list[tuple[int, str]]:
    async with get_state(request).db.read() as conn:
        rows = await conn.execute(
            select(TestCase.id, TestCase.title)
            .order_by(TestCase.title, TestCase.id)
            .limit(RUN_CHOICES_SHOWN)
        )
        return [(row.id, row.title) for row in rows]


@router.get("/")
async def show_queue(request: Request, viewer: CurrentViewer) -> Response:
    """What runs, what waits and in which order; kept current by `/events/queue`."""
    state = get_state(request)
    return page(
        request,
        "queue.html",
        viewer,
        board=await board.build(state, viewer),
        choices=await _run_choices(request),
        default_slots=(await queue_routes.read_settings(state)).max_concurrent_default,
    )


@router.post("/runs")
async def run_test_case(request: Request, viewer: ChangingViewer) -> Response:
    """Queue one run of a test case, at the priority chosen or the test case's own."""
    form = await forms.read(request)
    test_case_id = forms.whole_number(form, "test_case_id", "the test case", 1, forms.MAX_ID)
    options = queue.RunOptions(priority=forms.priority(form), triggered_by="dashboard")
    (item,) = await queue.enqueue(get_state(request).db, [test_case_id], viewer.id, options)
    log.info("run queued from the dashboard", extra={"execution_id": item.id})
    message = f"Execution #{item.id} queued at position {item.queue_position}."
    return done(request, message, forms.back_to(form), id=item.id, position=item.queue_position)


@router.post("/executions/{execution_id:int}/cancel")
async def cancel_execution(
    request: Request, execution_id: forms.RowId, viewer: ChangingViewer
) -> Response:
    """Cancel a pending execution, or ask the worker of a running one to stop it."""
    form = await forms.read(request)
    now = await queue.cancel(get_state(request).db, execution_id, viewer.owner_filter())
    message = (
        f"Execution #{execution_id} cancelled."
        if now != "running"
        else f"Execution #{execution_id} is being stopped."
    )
    return done(request, message, forms.back_to(form))


@router.post("/executions/{execution_id:int}/priority")
async def change_priority(
    request: Request, execution_id: forms.RowId, viewer: ChangingViewer
) -> Response:
    """Raise or lower a pending execution's priority; it moves in the line at once."""
    form = await forms.read(request)
    priority = forms.priority(form)
    if priority is None:
        raise errors.BadRequest("choose a priority from 1 (highest) to 10")
    db = get_state(request).db
    position = await queue.set_priority(db, execution_id, priority, viewer.owner_filter())
    message = f"Execution #{execution_id} now has priority {priority}, position {position}."
    return done(request, message, forms.back_to(form), position=position)


@router.get("/queue/clear")
async def confirm_clear(request: Request, viewer: CurrentViewer) -> Response:
    """Ask before clearing (the page's dialog asks the same without leaving the page)."""
    _admin_only(viewer)
    state = get_state(request)
    async with state.db.read() as conn:
        _slots, _running, pending, _paused = await queue_status.slots_and_counts(
            conn, state.settings.max_concurrent_executions
        )
    return page(request, "clear.html", viewer, pending=pending)


@router.post("/queue/clear")
async def clear_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Cancel every pending execution in one transaction (admins only); running ones go on."""
    _admin_only(viewer)
    form = await forms.read(request)
    if forms.text(form, "confirm") != "yes":
        raise errors.BadRequest("confirm that every pending execution should be cancelled")
    removed = await queue.clear(get_state(request).db)
    log.info("queue cleared from the dashboard", extra={"removed": removed, "by": viewer.id})
    runs = "execution" if removed == 1 else "executions"
    return done(request, f"Queue cleared: {removed} pending {runs} cancelled.", "/")


@router.post("/queue/slots")
async def change_slots(request: Request, viewer: ChangingViewer) -> Response:
    """Change the global number of slots (admins only); empty means MAX_CONCURRENT_EXECUTIONS."""
    _admin_only(viewer)
    form = await forms.read(request)
    state = get_state(request)
    slots = (
        forms.whole_number(form, "slots", "the number of slots", 1, MAX_SLOTS)
        if forms.text(form, "slots")
        else None
    )
    await queue.set_max_concurrent(state.db, slots)
    shown = (await queue_routes.read_settings(state)).max_concurrent
    log.info("slots changed from the dashboard", extra={"slots": slots, "by": viewer.id})
    return done(request, f"The queue now has {shown} slots.", "/")


@router.post("/queue/pause")
async def pause_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Start nothing new until resumed (admins only); pending runs keep their place."""
    _admin_only(viewer)
    await queue.set_paused(get_state(request).db, True)
    return done(request, "The queue is paused: nothing new starts.", "/")


@router.post("/queue/resume")
async def resume_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Start runs again (admins only)."""
    _admin_only(viewer)
    await queue.set_paused(get_state(request).db, False)
    return done(request, "The queue is running again.", "/")
