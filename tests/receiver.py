"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that keeps every request.

Each request is answered by the next of `answers` (a status, or `HOLD` to keep
the request open until the test lets go), then 200 once they run out.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

HOLD = -1


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)
    redirect_to: str | None = None
    received: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self.release.set()
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(headers, body, request_line.split(" ")[1]))
            self.changed.set()
            answer = self.answers.pop(0) if self.answers else 200
            if answer == HOLD:
                await self.release.wait()
                answer = 200
            extra = f"Location: {self.redirect_to}\r\n" if self.redirect_to else ""
            head = f"HTTP/1.1 {answer} X\r\nContent-Length: 2\r\n{extra}Connection: close\r\n"
            writer.write(f"{head}\r\nok".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def events(self) -> list[tuple[int | None, str]]:
        """(execution id, event) of each request, in the order they came."""
        found = []
        for item in self.received:
            doc = item.json
            found.append(((doc.get("execution") or {}).get("id"), doc["event"]))
        return found
