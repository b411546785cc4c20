"""Small web pages for browser runner tests, served on 127.0.0.1 by the test itself.

A plain asyncio server, no framework: a sign-in form that sets a cookie, a
page that changes a moment after it loads, a page that never answers (to
cancel or time out mid-load), and a barrier page that answers only when
`expected` visitors are waiting on it at once, which proves runs overlap
without a sleep.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

GATE_WAIT_S = 20.0
MAX_HEAD_BYTES = 65_536

LOGIN = """<!doctype html><title>Sign in</title>
<form id="login" method="post" action="/session">
  <input id="username" name="username" placeholder="user">
  <input id="password" name="password" type="password">
  <select id="role" name="role">
    <option value="qa">QA</option><option value="dev">Dev</option>
  </select>
  <label><input id="remember" name="remember" type="checkbox"> Remember me</label>
  <span id="help">?</span><div id="tip" hidden>Use your QA account</div>
  <button id="submit" type="submit">Sign in</button>
</form>
<p id="message">{message}</p>
<script>
  console.log("login page ready");
  document.getElementById("help").addEventListener("mouseenter", () => {{
    document.getElementById("tip").hidden = false;
  }});
</script>"""

WELCOME = """<!doctype html><title>Welcome</title>
<h1 id="greeting">Welcome, {user}</h1><p id="role">{role}</p><p id="remember">{remember}</p>"""

WHOAMI = """<!doctype html><title>Who</title><p id="who">{user}</p>"""

# The page's own timer, not the test's: the runner must wait for the change.
DELAYED = """<!doctype html><title>Delayed</title><p id="status">Loading</p>
<script>
  setTimeout(() => {
    const status = document.getElementById("status");
    status.textContent = "Ready";
    const button = document.createElement("button");
    button.id = "ready";
    button.textContent = "Done";
    button.onclick = () => { status.textContent = "Done"; };
    document.body.append(button);
  }, 300);
</script>"""


class Pages:
    """The test site. `hang_started` is set once a browser waits on /hang."""

    def __init__(self, expected_at_gate: int = 5) -> None:
        self.base_url = ""
        self.hang_started = asyncio.Event()
        self.expected_at_gate = expected_at_gate
        self.at_gate = 0
        self.gate_open = asyncio.Event()
        self._connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            method, target, headers = await _read_head(reader)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if urlsplit(target).path == "/hang":
                self.hang_started.set()
                await reader.read()  # never answer: hold on until the browser drops it
                return
            await self._route(method, target, headers, body, writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _route(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        cookies = SimpleCookie(headers.get("cookie", ""))
        user = cookies["user"].value if "user" in cookies else "anonymous"
        if url.path == "/login":
            _respond(writer, LOGIN.format(message=""))
        elif url.path == "/session" and method == "POST":
            self._sign_in(writer, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        elif url.path == "/welcome":
            page = WELCOME.format(
                user=html.escape(user),
                role=html.escape(query.get("role", "")),
                remember=html.escape(query.get("remember", "off")),
            )
            _respond(writer, page)
        elif url.path == "/whoami":
            _respond(writer, WHOAMI.format(user=html.escape(user)))
        elif url.path == "/delayed":
            _respond(writer, DELAYED)
        elif url.path == "/gate":
            await self._gate(writer, user)
        else:
            _respond(writer, "<!doctype html><title>Not found</title>", status="404 Not Found")

    def _sign_in(self, writer: asyncio.StreamWriter, form: dict[str, str]) -> None:
        if form.get("password") != "secret":
            _respond(writer, LOGIN.format(message="Invalid credentials"))
            return
        role = form.get("role", "")
        remember = form.get("remember", "off")
        cookie = f"user={form.get('username', '')}; Path=/; SameSite=Lax"
        _respond(
            writer,
            "",
            status="303 See Other",
            extra={"Location": f"/welcome?role={role}&remember={remember}", "Set-Cookie": cookie},
        )

    async def _gate(self, writer: asyncio.StreamWriter, user: str) -> None:
        self.at_gate += 1
        if self.at_gate >= self.expected_at_gate:
            self.gate_open.set()
        await asyncio.wait_for(self.gate_open.wait(), GATE_WAIT_S)
        _respond(writer, WHOAMI.format(user=html.escape(user)))

    async def close_connections(self) -> None:
        for writer in list(self._connections):
            writer.close()
        for writer in list(self._connections):
            with suppress(ConnectionError):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD_BYTES:
        raise ValueError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _respond(
    writer: asyncio.StreamWriter,
    page: str,
    *,
    status: str = "200 OK",
    extra: dict[str, str] | None = None,
) -> None:
    body = page.encode()
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


@asynccontextmanager
async def serve_pages(expected_at_gate: int = 5) -> AsyncIterator[Pages]:
    """The test site on a free port of 127.0.0.1, closed with every connection it holds."""
    pages = Pages(expected_at_gate)
    server = await asyncio.start_server(pages.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pages.base_url = f"http://127.0.0.1:{port}"
    try:
        yield pages
    finally:
        server.close()
        await pages.close_connections()
        await server.wait_closed()
