"""The FastAPI application: routes, error mapping, start-up and shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testqueue import errors, security, web
from testqueue.api.deps import AppState
from testqueue.api.routes import auth, executions, queue_routes, tests, users
from testqueue.config import Settings
from testqueue.database import Database, migrate
from testqueue.dispatcher import Dispatcher
from testqueue.runners import Registry

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    with_worker: bool = True,
    on_bootstrap: Callable[[security.Bootstrap], None] | None = None,
) -> FastAPI:
    """The whole HTTP side; with `with_worker`, this process also runs a dispatcher."""
    state = AppState(
        settings=settings, db=Database(settings), registry=registry or Registry(settings)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings)
        state.secret_key = await security.load_secret_key(settings, state.db)
        bootstrap = await security.ensure_admin(settings, state.db)
        if bootstrap is not None and on_bootstrap is not None:
            on_bootstrap(bootstrap)
        if with_worker:
            state.dispatcher = Dispatcher(settings, state.db, state.registry)
            await state.dispatcher.start()
        try:
            yield
        finally:
            if state.dispatcher is not None:
                await state.dispatcher.stop()
            await state.db.dispose()

    app = FastAPI(
        title="testqueue",
        summary="A durable priority queue that runs test executions within a global limit.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.testqueue = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    for module in (auth, users, tests, queue_routes, executions):
        app.include_router(module.router, prefix=API_PREFIX)
    web.mount(app)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """Liveness: answers without a token."""
        dispatcher = state.dispatcher
        return {"status": "ok", "worker": bool(dispatcher and dispatcher.is_running)}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.TestqueueError)
    async def domain_error(_request: Request, exc: errors.TestqueueError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_problem(e) for e in exc.errors()]}, status_code=422)


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
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return {
        "loc": list(error.get("loc", ())),
        "msg": f"{where}: {message}" if where else message,
        "type": error.get("type", "value_error"),
    }


class BodyLimit:
    """Refuses request bodies over MAX_BODY_BYTES with 413 before reading them whole.

    A declared Content-Length over the limit is refused at once; a body that
    turns out longer than declared (or is chunked) is cut off where it crosses
    the limit, and whatever the app made of the cut body is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"the request body is over {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _answer(send, 400, "the Content-Length header is not a number of bytes")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await _answer(send, 413, too_big)
            return
        guard = _BodyGuard(receive, send, self.max_bytes)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.over:
                raise
        if guard.over and not guard.started:
            await _answer(send, 413, too_big)


class _BodyGuard:
    """Counts the body as the app reads it; once over the limit, the app's answer is dropped."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._seen = 0
        self.over = False
        self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        self._seen += len(message.get("body", b""))
        if self._seen > self._max_bytes:
            self.over = True
            raise errors.BadRequest(f"the request body is over {self._max_bytes} bytes")
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
