"""GET /metrics: the queue's figures in the Prometheus text format, at the root."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from testqueue.api.contract import errors
from testqueue.api.deps import State
from testqueue.services import metrics

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **errors(401, 403),
    },
)
async def read_metrics(request: Request, state: State) -> Response:
    """The queue's figures for Prometheus, read from the database at each scrape, so
    every API host reports the same; the process family is this process's own.

    Open to `Authorization: Bearer <METRICS_TOKEN>` or to a client address in
    METRICS_ALLOW (loopback by default); see docs/metrics.md.
    """
    client = request.client.host if request.client else None
    metrics.check_access(state.settings, request.headers.get("authorization"), client)
    return Response(await metrics.exposition(state.db), media_type=CONTENT_TYPE_LATEST)
