"""Signing in and out of the dashboard with the same accounts as the API."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from testqueue import errors
from testqueue.state import get_state
from testqueue.web import forms, session
from testqueue.web.render import PageRoute, page
from testqueue.web.session import ChangingViewer

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _signin_page(
    request: Request, next_path: str, *, problem: str = "", username: str = "", status: int = 200
) -> Response:
    state = get_state(request)
    nonce = session.signin_nonce(request)
    response = page(
        request,
        "signin.html",
        None,
        status_code=status,
        next_path=forms.local_path(next_path),
        csrf=session.signin_csrf(state.accounts.secret_key, nonce),
        problem=problem,
        username=username,
    )
    session.keep_signin_nonce(request, response, nonce)
    return response


@router.get("/signin")
async def show_signin(
    request: Request, next_path: Annotated[str, Query(alias="next", max_length=2000)] = "/"
) -> Response:
    """The sign-in form; a signed-in visitor goes straight on."""
    if await session.viewer_of(request) is not None:
        return RedirectResponse(forms.local_path(next_path), status_code=303)
    return _signin_page(request, next_path)


@router.post("/signin")
async def sign_in(request: Request) -> Response:
    """Check the password and start a session (an HttpOnly cookie holding a token)."""
    state = get_state(request)
    form = await request.form()
    username, password, sent, next_path = (
        str(form.get(name, "")) for name in ("username", "password", "csrf", "next")
    )
    if not session.signin_csrf_ok(request, state.accounts.secret_key, sent):
        problem = "The sign-in form expired. Please try again."
        return _signin_page(request, next_path, problem=problem, username=username, status=403)
    address = request.client.host if request.client else "unknown"
    try:
        token, _ttl = await state.accounts.sign_in(username, password, address)
    except errors.TooManyRequests as exc:
        log.info("dashboard sign-in throttled", extra={"username": username[:64]})
        problem = f"Too many failed sign-ins. Try again in {exc.retry_after_s} s."
        refused = _signin_page(request, next_path, problem=problem, username=username, status=429)
        refused.headers["Retry-After"] = str(exc.retry_after_s)
        return refused
    except errors.Unauthorized:
        log.info("dashboard sign-in refused", extra={"username": username[:64]})
        problem = "Wrong username or password."
        return _signin_page(request, next_path, problem=problem, username=username, status=401)
    response = RedirectResponse(forms.local_path(next_path), status_code=303)
    session.start_session(request, response, state, token)
    return response


@router.post("/signout")
async def sign_out(request: Request, viewer: ChangingViewer) -> Response:
    """End the session: its cookie is dropped and its token stops working everywhere."""
    await get_state(request).accounts.sign_out(viewer.actor)
    response = RedirectResponse("/signin", status_code=303)
    session.end_session(response)
    return response
