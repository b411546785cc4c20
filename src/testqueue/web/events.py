"""The dashboard's live queue stream (the plumbing is `testqueue.sse`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from testqueue import sse
from testqueue.state import get_state
from testqueue.web import board
from testqueue.web.render import PageRoute
from testqueue.web.session import CurrentViewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/events/queue")
async def stream_queue(request: Request, viewer: CurrentViewer) -> StreamingResponse:
    """The queue board, pushed whenever a run is queued, starts, ends or moves."""
    state = get_state(request)
    last: list[tuple[Any, ...]] = []

    async def produce() -> str:
        mark = await board.fingerprint(state)
        if last and last[0] == mark:
            return ""
        last[:] = [mark]
        return sse.message("queue", await board.build(state, viewer))

    return sse.stream(request, produce)
