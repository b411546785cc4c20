"""Who is looking at the dashboard: the session cookie and the CSRF tokens that go with it.

The session cookie holds the same signed token the API hands out, so sign-in
reuses `services.accounts` and one account works in both places. The cookie is
HttpOnly (page scripts never see the token) and SameSite=Lax (other sites'
forms arrive without it). On top of that, every form that changes something
carries a CSRF token derived with HMAC from the secret key and the session
token: a page on another origin can neither read it nor compute it, and it
changes with every sign-in. The sign-in form, which has no session yet, is
bound the same way to a random nonce in a short-lived cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from testqueue import errors
from testqueue.services.accounts import Actor
from testqueue.state import AppState, get_state

SESSION_COOKIE = "testqueue_session"
SIGNIN_COOKIE = "testqueue_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SIGNIN_NONCE_TTL_S = 3600


class SignInRequired(Exception):
    """The request has no valid session; pages answer with a redirect to the sign-in form."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of one request, with the CSRF token their forms carry."""

    actor: Actor
    csrf: str

    @property
    def id(self) -> int:
        return self.actor.id

    @property
    def username(self) -> str:
        return self.actor.username

    @property
    def is_admin(self) -> bool:
        return self.actor.is_admin

    def owner_filter(self) -> int | None:
        return self.actor.owner_filter()


def _mac(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def csrf_for(secret: str, session_token: str) -> str:
    """The CSRF token of one session: stable for the session, unguessable without the key."""
    return _mac(secret, "csrf", session_token)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, state: AppState, token: str) -> None:
    """Set the session cookie (and drop the sign-in nonce) after a good password."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=state.settings.access_token_ttl,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/")


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


async def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer, or None when the cookie is missing, expired or names no user."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    state = get_state(request)
    try:
        actor = await state.accounts.actor_for_token(token)
    except errors.Unauthorized:
        return None
    return Viewer(actor, csrf_for(state.accounts.secret_key, token))


async def require_viewer(request: Request) -> Viewer:
    viewer = await viewer_of(request)
    if viewer is None:
        raise SignInRequired()
    # Kept so an error page raised later in this request can still show who is signed in.
    request.state.viewer = viewer
    return viewer


async def _sent_csrf(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


async def require_changer(request: Request) -> Viewer:
    """The viewer of a request that changes something: signed in and carrying its CSRF token."""
    viewer = await require_viewer(request)
    if not hmac.compare_digest(await _sent_csrf(request), viewer.csrf):
        raise errors.Forbidden("the form's security token is missing or stale: reload the page")
    return viewer


CurrentViewer = Annotated[Viewer, Depends(require_viewer)]
ChangingViewer = Annotated[Viewer, Depends(require_changer)]


def signin_nonce(request: Request) -> str:
    """The nonce of this browser's sign-in form: the one in its cookie, or a new one."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)


def keep_signin_nonce(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=SIGNIN_NONCE_TTL_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )


def signin_csrf(secret: str, nonce: str) -> str:
    return _mac(secret, "signin", nonce)


def signin_csrf_ok(request: Request, secret: str, sent: str) -> bool:
    nonce = request.cookies.get(SIGNIN_COOKIE)
    return bool(nonce) and hmac.compare_digest(sent, signin_csrf(secret, nonce or ""))
