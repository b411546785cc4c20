"""Turning dashboard routes into HTML: templates, filters, notices and error pages.

Every dashboard route is a `PageRoute`, which answers the domain's errors the
way a browser needs them: an HTML page with the message for a plain form post
or link, or `{"detail": ...}` JSON for the page's own `fetch` calls, instead
of the API's JSON everywhere. It also sets the security headers once, so no
page can forget them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.templating import Jinja2Templates

from testqueue import errors
from testqueue.models import as_utc
from testqueue.vocabulary import HIGHEST_PRIORITY, LOWEST_PRIORITY, priority_word
from testqueue.web.session import SignInRequired, Viewer

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
NOTICE_COOKIE = "testqueue_notice"
NOTICE_MAX_CHARS = 300

# Scripts and styles come only from /static: an injected <script> or style
# attribute does nothing even if some text slipped past autoescaping.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages carry CSRF tokens and private data: never keep them in a shared cache.
    "Cache-Control": "no-store",
}


def iso(value: datetime | None) -> str:
    """A UTC timestamp as the page scripts parse it (`...Z`)."""
    if value is None:
        return ""
    return as_utc(value).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def clock(value: datetime | None) -> str:
    """A timestamp for people, before the page script turns it into local time."""
    if value is None:
        return "-"
    return as_utc(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float | None) -> str:
    """A duration the way a person reads it: 0.4 s, 12 s, 3 m 05 s, 2 h 10 m."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} m"


def priority_label(priority: int) -> str:
    word = priority_word(priority)
    return f"{priority} ({word})" if word else str(priority)


@cache
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """A static file's URL with its content hash, so a new release is never served stale."""
    return f"/static/{name}?v={_static_version(name)}"


def query_with(base: dict[str, Any], **changes: Any) -> str:
    """A query string: `base` with `changes` applied, empty values left out."""
    merged = {**base, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in ("", None)})


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=iso, clock=clock, span=span, priority_label=priority_label)
    env.globals.update(
        static_url=static_url,
        query_with=query_with,
        priorities=list(range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1)),
    )
    return env


templates = Jinja2Templates(env=_environment())


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def page(
    request: Request,
    name: str,
    viewer: Viewer | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """Render one page; a notice left by the last redirect is shown once, then dropped."""
    notice = unquote(request.cookies.get(NOTICE_COOKIE, ""))[:NOTICE_MAX_CHARS]
    context.setdefault("notice", notice)
    context.setdefault("problem", "")
    response = templates.TemplateResponse(
        request, name, {"viewer": viewer, "path": request.url.path, **context}, status_code
    )
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def done(request: Request, message: str, back: str, **extra: Any) -> Response:
    """The answer to a form that worked: JSON for the page's script, else a redirect back."""
    if wants_json(request):
        return JSONResponse({"message": message, **extra})
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(
        NOTICE_COOKIE, quote(message[:NOTICE_MAX_CHARS]), max_age=60, httponly=True, path="/"
    )
    return response


def _refusal(request: Request, status_code: int, message: str) -> Response:
    if status_code == 403:
        # Forged or forbidden changes are worth a line: they are how misuse shows.
        log.info(
            "dashboard request refused",
            extra={"path": request.url.path, "method": request.method, "reason": message},
        )
    if wants_json(request) or request.url.path.startswith("/events/"):
        return JSONResponse({"detail": message}, status_code=status_code)
    viewer = getattr(request.state, "viewer", None)
    heading = {403: "Not allowed", 404: "Not found"}.get(status_code, "That did not work")
    return page(
        request, "error.html", viewer, status_code=status_code, message=message, heading=heading
    )


def _signin_redirect(request: Request) -> Response:
    if wants_json(request) or request.url.path.startswith("/events/"):
        return JSONResponse({"detail": "sign in first"}, status_code=401)
    target = request.url.path
    if request.url.query:
        target += f"?{request.url.query}"
    if request.method != "GET":
        target = "/"
    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)


class PageRoute(APIRoute):
    """A dashboard route: domain errors become pages, and every answer gets the headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = _signin_redirect(request)
            except errors.TestqueueError as exc:
                if exc.status_code >= 500:
                    raise
                response = _refusal(request, exc.status_code, exc.message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded
