"""Reading plain HTML form fields into checked values.

Dashboard routes read their forms here instead of declaring FastAPI `Form`
parameters, so a bad value becomes the domain's `BadRequest` (a message on
the page) rather than the API's JSON validation error.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData

from testqueue import errors, queue


async def read(request: Request) -> FormData:
    return await request.form()


def text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def whole_number(form: FormData, name: str, label: str, low: int, high: int) -> int:
    """An integer field within `low..high`; `errors.BadRequest` names the field otherwise."""
    raw = text(form, name)
    if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
        raise errors.BadRequest(f"{label} must be a whole number from {low} to {high}")
    return int(raw)


def priority(form: FormData, name: str = "priority") -> int | None:
    """1..10 or a word (high, medium, low); None when left empty (the test case's own)."""
    raw = text(form, name)
    return queue.parse_priority(raw) if raw else None


def local_path(target: str, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default`: never a redirect to another host."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def back_to(form: FormData, default: str = "/") -> str:
    """Where to send the browser after the form."""
    return local_path(text(form, "back"), default)
