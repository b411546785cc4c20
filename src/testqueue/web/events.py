"""The dashboard's live queue stream (the plumbing is `testqueue.sse`, the broadcaster
that feeds every open stream is `web.live`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from testqueue import sse
from testqueue.web import live
from testqueue.web.render import PageRoute
from testqueue.web.session import CurrentViewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/events/queue")
async def stream_queue(request: Request, viewer: CurrentViewer) -> StreamingResponse:
    """The queue board, pushed whenever a run is queued, starts, ends or moves."""
    board = live.broadcaster(request)
    watcher = live.Watcher(viewer)
    return sse.stream(
        request, lambda: board.message(watcher), news=watcher.news, around=board.watching(watcher)
    )
