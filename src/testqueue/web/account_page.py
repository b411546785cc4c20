"""Your account in the dashboard: change your password, your personal access tokens, and
signing out everywhere. The rules are `services.accounts`, as in the API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.models import utcnow
from testqueue.params import UserId
from testqueue.state import get_state
from testqueue.vocabulary import MAX_INT_ID
from testqueue.web import forms, session
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

MAX_TOKEN_DAYS = 3660
MIN_PASSWORD = 8


async def _account_page(
    request: Request, viewer: Viewer, *, new_token: str = "", status_code: int = 200
) -> Response:
    state = get_state(request)
    return page(
        request,
        "account.html",
        viewer,
        status_code=status_code,
        user=await state.accounts.read_user(viewer.id),
        tokens=await state.accounts.list_access_tokens(viewer.actor),
        new_token=new_token,
    )


@router.get("/account")
async def show_account(request: Request, viewer: CurrentViewer) -> Response:
    """Your password, your personal access tokens, your sessions."""
    return await _account_page(request, viewer)


def new_password(form: FormData, name: str = "new_password") -> str:
    password = form.get(name, "")
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= 256:
        raise errors.BadRequest(f"the new password needs {MIN_PASSWORD} to 256 characters")
    return password


@router.post("/account/password")
async def change_password(request: Request, viewer: ChangingViewer) -> Response:
    """Change your password; every session of yours ends, this one too."""
    form = await forms.read(request)
    current = form.get("current_password", "")
    password = new_password(form)
    state = get_state(request)
    await state.accounts.change_own_password(viewer.actor, str(current), password)
    response = done(request, "Password changed: sign in with the new one.", "/signin")
    session.end_session(response)
    return response


@router.post("/account/tokens")
async def create_token(request: Request, viewer: ChangingViewer) -> Response:
    """A personal access token: shown on the page this once."""
    form = await forms.read(request)
    name = forms.text(form, "name")
    if not 1 <= len(name) <= 100 or "\0" in name:
        raise errors.BadRequest("give the token a name of 1 to 100 characters")
    days = (
        forms.whole_number(form, "expires_in_days", "the days until it expires", 1, MAX_TOKEN_DAYS)
        if forms.text(form, "expires_in_days")
        else None
    )
    expires_at = utcnow() + timedelta(days=days) if days else None
    created = await get_state(request).accounts.create_access_token(viewer.actor, name, expires_at)
    return await _account_page(request, viewer, new_token=created.token, status_code=201)


@router.post("/account/tokens/{token_id:int}/revoke")
async def revoke_token(request: Request, token_id: int, viewer: ChangingViewer) -> Response:
    """Revoke one of your tokens; it stops working at once."""
    if not 1 <= token_id <= MAX_INT_ID:
        raise errors.NotFound(f"you have no access token {token_id}")
    await get_state(request).accounts.revoke_access_token(viewer.actor, token_id)
    return done(request, f"Token {token_id} revoked.", "/account")


@router.post("/account/sessions/{user_id:int}/end")
async def end_sessions(request: Request, user_id: UserId, viewer: ChangingViewer) -> Response:
    """Sign an account out everywhere: your own, or any for an admin."""
    ended = await get_state(request).accounts.end_sessions(viewer.actor, user_id)
    if user_id == viewer.id:
        response = done(request, "Signed out everywhere.", "/signin")
        session.end_session(response)
        return response
    return done(request, f"{ended} sessions ended.", forms.back_to(await forms.read(request)))
