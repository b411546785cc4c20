"""Reading plain HTML form fields into checked values.

Dashboard routes read their forms here instead of declaring FastAPI `Form`
parameters, so a bad value becomes the domain's `BadRequest` (a message on
the page) rather than the API's JSON validation error.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Path, Request
from starlette.datastructures import FormData

from testqueue import errors, queue

MAX_ID = 2**63 - 1
# A row id in a path: larger numbers would overflow the database's integer, not miss.
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def read(request: Request) -> FormData:
    return await request.form()


def text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def whole_number(form: FormData, name: str, label: str, low: int, high: int) -> int:
    """An integer field within `low..high`; `errors.BadRequest` names the field otherwise."""
    raw = text(form, name)
    if not raw.lstrip("-").isdigit() or len(raw) > 20 or not low <= int(raw) <= high:
        raise errors.BadRequest(f"{label} must be a whole number from {low} to {high}")
    return int(raw)


def priority(form: FormData, name: str = "priority") -> int | None:
    """1..10 or a word (high, medium, low); None when left empty (the test case's own)."""
    raw = text(form, name)
    return queue.parse_priority(raw) if raw else None


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


def row_id(raw: str) -> int | None:
    """A query field naming a row: its id, or None when empty or not a usable id."""
    if raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= MAX_ID:
        return int(raw)
    return None
