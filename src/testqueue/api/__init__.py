"""The HTTP API under /api/v1: thin translations of requests into calls of the queue and
the services, with domain errors mapped to HTTP statuses in one place."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from testqueue import errors
from testqueue.api import contract, deps
from testqueue.api.routes import (
    audit,
    auth,
    batches,
    executions,
    metrics,
    queue_routes,
    schedules,
    suites,
    tests,
    users,
    webhooks,
)
from testqueue.schemas.common import problem_text
from testqueue.services import test_cases
from testqueue.state import AppState, get_state

PREFIX = "/api/v1"


def mount(app: FastAPI) -> None:
    """Add the API's routes and its error answers to `app`."""
    _add_error_handlers(app)
    once = Depends(deps.query_once(PREFIX))
    # Routes are matched in this order, one by one: the calls made most (queueing runs,
    # reading the line and the runs) come first. `queue_routes` precedes `executions`,
    # whose `/executions/{execution_id}` would otherwise take `/executions/queue`.
    for module in (
        queue_routes,
        executions,
        batches,
        tests,
        auth,
        users,
        suites,
        schedules,
        audit,
        webhooks,
    ):
        app.include_router(module.router, prefix=PREFIX, dependencies=[once])
    # Prometheus looks for /metrics at the root.
    app.include_router(metrics.router)
    state: AppState = app.state.testqueue
    contract.install(app, sorted(test_cases.runner_kinds(state.registry)))

    @app.get(f"{PREFIX}/health", tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        """Liveness: answers without a token."""
        dispatcher = get_state(request).dispatcher
        return {"status": "ok", "worker": bool(dispatcher and dispatcher.is_running)}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.TestqueueError)
    async def domain_error(_request: Request, exc: errors.TestqueueError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.message}, status_code=exc.status_code, headers=error_headers(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_problem(e) for e in exc.errors()]}, status_code=422)


def error_headers(exc: errors.TestqueueError) -> dict[str, str]:
    """The headers an error answer carries: how to sign in, or how long to wait."""
    if exc.status_code == 401:
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, errors.TooManyRequests | errors.Unavailable):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def _problem(error: Any) -> dict[str, Any]:
    """One validation error, without echoing the (possibly huge) input back."""
    if error.get("type") == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        position = error.get("loc", ("body", 0))[-1]
        return {
            "loc": list(error.get("loc", ())),
            "msg": f"the body is not valid JSON: {reason} at character {position}",
            "type": "json_invalid",
        }
    return {
        "loc": list(error.get("loc", ())),
        "msg": problem_text(error),
        "type": error.get("type", "value_error"),
    }
