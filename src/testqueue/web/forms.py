"""Reading plain HTML form fields into checked values.

Dashboard routes read their forms here instead of declaring FastAPI `Form`
parameters, so a bad value becomes the domain's `BadRequest` (a message on
the page) rather than the API's JSON validation error. Numbers are parsed by
the vocabulary's one parser, as everywhere else.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.vocabulary import parse_priority, parse_whole


async def read(request: Request) -> FormData:
    return await request.form()


async def confirmed(request: Request, what: str) -> FormData:
    """The form of a destructive action, once its `confirm` box says yes; BadRequest if not."""
    form = await read(request)
    if text(form, "confirm") != "yes":
        raise errors.BadRequest(f"confirm that {what}")
    return form


def text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def whole_number(form: FormData, name: str, label: str, low: int, high: int) -> int:
    """An integer field within `low..high`; `errors.BadRequest` names the field otherwise."""
    try:
        return parse_whole(text(form, name), low, high, label)
    except ValueError as exc:
        raise errors.BadRequest(str(exc)) from exc


def priority(form: FormData, name: str = "priority") -> int | None:
    """1..10 or a word (high, medium, low); None when left empty (the test case's own)."""
    raw = text(form, name)
    if not raw:
        return None
    try:
        return parse_priority(raw)
    except ValueError as exc:
        raise errors.BadRequest(str(exc)) from exc


def local_path(target: str, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default`: never a redirect to another host."""
    # Browsers drop tabs and newlines and read "\\" as "/", so "/\t/evil" and
    # "/\\evil" would leave the site: refuse anything but a plain local path.
    if not target.startswith("/") or any(ch.isspace() or ch == "\\" for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return default
    return target


def back_to(form: FormData, default: str = "/") -> str:
    """Where to send the browser after the form."""
    return local_path(text(form, "back"), default)
