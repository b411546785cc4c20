"""Middleware for every request, API and dashboard alike."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testqueue import errors
from testqueue.database import is_unavailable

log = logging.getLogger(__name__)

# How long a client should wait after a 503 for a lost database connection.
RETRY_AFTER_S = 1


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


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _no_body(receive: Receive) -> Receive:
    """For a repeated read: its (empty) body once more, then the connection as it goes on."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return again


class DatabaseLost:
    """Answers a request that lost its database connection with a retry or a clear 503.

    A read (GET, HEAD) is safe to repeat: it is tried once more on a fresh
    connection (the pool has dropped the dead ones by then). Anything else
    may or may not have been saved, so it gets 503 with `Retry-After` and a
    message that says so, never a 500.
    """

    SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tries = 2 if scope["method"] in self.SAFE else 1
        for attempt in range(1, tries + 1):
            started = False

            async def tracked(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            try:
                await self.app(scope, receive if attempt == 1 else _no_body(receive), tracked)
                return
            except Exception as exc:
                if started or not is_unavailable(exc):
                    raise
                log.warning(
                    "database unavailable during a request",
                    extra={"path": scope["path"], "attempt": attempt, "error": str(exc)[:200]},
                )
        detail = (
            "the database could not be reached; a change may or may not have been saved: "
            "read it back, or try again in a moment"
            if scope["method"] not in self.SAFE
            else "the database could not be reached: try again in a moment"
        )
        await _answer(send, 503, detail, [(b"retry-after", str(RETRY_AFTER_S).encode())])
