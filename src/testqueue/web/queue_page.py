"""The queue page and what can be done from it: run, cancel, move, clear, change the slots.

Rights are the API's: anyone signed in may run any test case; members cancel
and move their own executions (the queue functions check the owner); only
admins clear the queue, pause it or change the slots. The page hides controls
a viewer may not use, and these routes refuse them anyway.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from testqueue import errors, queue
from testqueue.params import ExecutionId
from testqueue.services import overview, runs, test_cases
from testqueue.state import get_state
from testqueue.vocabulary import MAX_INT_ID, MAX_SLOTS, Status
from testqueue.web import board, forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

RUN_CHOICES_SHOWN = 500


@router.get("/")
async def show_queue(request: Request, viewer: CurrentViewer) -> Response:
    """What runs, what waits and in which order; kept current by `/events/queue`."""
    state = get_state(request)
    return page(
        request,
        "queue.html",
        viewer,
        board=await board.build(state, viewer),
        choices=await test_cases.choices(state.db, RUN_CHOICES_SHOWN),
        default_slots=(
            await overview.read_settings(state.db, state.settings)
        ).max_concurrent_default,
    )


@router.post("/runs")
async def run_test_case(request: Request, viewer: ChangingViewer) -> Response:
    """Queue one run of a test case, at the priority chosen or the test case's own."""
    form = await forms.read(request)
    test_case_id = forms.whole_number(form, "test_case_id", "the test case", 1, MAX_INT_ID)
    options = queue.RunOptions(priority=forms.priority(form), triggered_by="dashboard")
    (item,) = await runs.queue_runs(get_state(request).db, [test_case_id], viewer.actor, options)
    log.info("run queued from the dashboard", extra={"execution_id": item.id})
    message = f"Execution #{item.id} queued at position {item.queue_position}."
    return done(request, message, forms.back_to(form), id=item.id, position=item.queue_position)


@router.post("/executions/{execution_id:int}/cancel")
async def cancel_execution(
    request: Request, execution_id: ExecutionId, viewer: ChangingViewer
) -> Response:
    """Cancel a pending execution, or ask the worker of a running one to stop it."""
    form = await forms.read(request)
    now = await runs.cancel(get_state(request).db, execution_id, viewer.actor, confirm=False)
    message = (
        f"Execution #{execution_id} cancelled."
        if now != Status.RUNNING
        else f"Execution #{execution_id} is being stopped."
    )
    return done(request, message, forms.back_to(form))


@router.post("/executions/{execution_id:int}/priority")
async def change_priority(
    request: Request, execution_id: ExecutionId, viewer: ChangingViewer
) -> Response:
    """Raise or lower a pending execution's priority; it moves in the line at once."""
    form = await forms.read(request)
    priority = forms.priority(form)
    if priority is None:
        raise errors.BadRequest("choose a priority from 1 (highest) to 10")
    db = get_state(request).db
    position = await runs.change_priority(db, execution_id, priority, viewer.actor)
    message = f"Execution #{execution_id} now has priority {priority}, position {position}."
    return done(request, message, forms.back_to(form), position=position)


@router.get("/queue/clear")
async def confirm_clear(request: Request, viewer: CurrentViewer) -> Response:
    """Ask before clearing (the page's dialog asks the same without leaving the page)."""
    viewer.actor.require_admin()
    state = get_state(request)
    pending = await overview.pending_count(state.db, state.settings)
    return page(request, "clear.html", viewer, pending=pending)


@router.post("/queue/clear")
async def clear_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Cancel every pending execution in one transaction (admins only); running ones go on."""
    viewer.actor.require_admin()
    await forms.confirmed(request, "every pending execution should be cancelled")
    removed = await overview.clear(get_state(request).db, viewer.actor)
    log.info("queue cleared from the dashboard", extra={"removed": removed, "by": viewer.id})
    runs = "execution" if removed == 1 else "executions"
    return done(request, f"Queue cleared: {removed} pending {runs} cancelled.", "/")


@router.post("/queue/slots")
async def change_slots(request: Request, viewer: ChangingViewer) -> Response:
    """Change the global number of slots (admins only); empty means MAX_CONCURRENT_EXECUTIONS."""
    viewer.actor.require_admin()
    form = await forms.read(request)
    state = get_state(request)
    slots = (
        forms.whole_number(form, "slots", "the number of slots", 1, MAX_SLOTS)
        if forms.text(form, "slots")
        else None
    )
    await overview.set_slots(state.db, viewer.actor, slots)
    shown = (await overview.read_settings(state.db, state.settings)).max_concurrent
    log.info("slots changed from the dashboard", extra={"slots": slots, "by": viewer.id})
    return done(request, f"The queue now has {shown} slots.", "/")


@router.post("/queue/pause")
async def pause_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Start nothing new until resumed (admins only); pending runs keep their place."""
    await overview.set_paused(get_state(request).db, viewer.actor, True)
    return done(request, "The queue is paused: nothing new starts.", "/")


@router.post("/queue/resume")
async def resume_queue(request: Request, viewer: ChangingViewer) -> Response:
    """Start runs again (admins only)."""
    await overview.set_paused(get_state(request).db, viewer.actor, False)
    return done(request, "The queue is running again.", "/")
