"""Middleware for every request, API and dashboard alike."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testqueue import errors


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
