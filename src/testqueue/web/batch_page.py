"""One batch in the dashboard: its progress and verdict live, its runs, cancel and rerun."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from testqueue import sse
from testqueue.schemas.batches import RerunRequest
from testqueue.services import batches
from testqueue.state import get_state
from testqueue.vocabulary import MAX_BIGINT
from testqueue.web import forms
from testqueue.web.render import PageRoute, done, page, templates
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

BatchId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


def _context(detail: Any, viewer: Viewer) -> dict[str, Any]:
    return {
        "batch": detail,
        "items": detail.executions,
        "can_cancel": detail.verdict is None
        and detail.status != "cancelled"
        and (viewer.is_admin or detail.user_id == viewer.id),
    }


@router.get("/batches")
async def list_batches(request: Request, viewer: CurrentViewer) -> Response:
    """The latest batches and their verdicts."""
    found = await batches.list_batches(get_state(request).db, 50, 0)
    return page(request, "batches.html", viewer, found=found)


@router.get("/batches/{batch_id:int}")
async def show_batch(request: Request, batch_id: BatchId, viewer: CurrentViewer) -> Response:
    """A batch: progress, counts and verdict (following live), every run, cancel, rerun."""
    detail = await batches.batch_detail(get_state(request).db, batch_id)
    return page(request, "batch.html", viewer, **_context(detail, viewer))


@router.post("/batches/{batch_id:int}/cancel")
async def cancel_batch(request: Request, batch_id: BatchId, viewer: ChangingViewer) -> Response:
    """Cancel what waits and stop what runs (its owner, or an admin)."""
    await batches.cancel_batch(get_state(request).db, batch_id, viewer.actor)
    return done(request, f"Batch #{batch_id} cancelled.", f"/batches/{batch_id}")


@router.post("/batches/{batch_id:int}/rerun")
async def rerun_batch(request: Request, batch_id: BatchId, viewer: ChangingViewer) -> Response:
    """A new batch of the failed (or all) test cases, one step higher."""
    form = await forms.read(request)
    only = "all" if forms.text(form, "only") == "all" else "failed"
    made = await batches.rerun(
        get_state(request).db, batch_id, RerunRequest(only=only), viewer.actor
    )
    return done(request, f"Batch #{made.batch.id} queued.", f"/batches/{made.batch.id}")


@router.get("/events/batches/{batch_id:int}")
async def stream_batch(
    request: Request, batch_id: BatchId, viewer: CurrentViewer
) -> StreamingResponse:
    """The batch's summary and runs, pushed when they change, until it ended."""
    state = get_state(request)
    last: list[Any] = []

    async def produce() -> str:
        summary = await batches.read_batch(state.db, batch_id)
        mark = summary.model_dump(mode="json")
        if last and last[0] == mark:
            return ""
        last[:] = [mark]
        detail = await batches.batch_detail(state.db, batch_id)
        context = _context(detail, viewer)
        html = templates.get_template("_batch_body.html").render({**context, "viewer": viewer})
        message = sse.message("batch", {"html": html, "live": detail.verdict is None})
        return message + (sse.END if detail.verdict is not None else "")

    return sse.stream(request, produce)
