"""The admin page: every account (roles, disable, passwords, sessions) and the audit trail.

Admins only; the rules are `services.accounts` and `services.audit_trail`, as
in the API, so the last active admin stays an active admin here too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.params import UserId
from testqueue.services import audit_trail
from testqueue.state import get_state
from testqueue.vocabulary import Role
from testqueue.web import forms
from testqueue.web.account_page import new_password
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

AUDIT_PAGE_SIZE = 25
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")


@router.get("/admin")
async def show_admin(
    request: Request,
    viewer: CurrentViewer,
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    """Accounts and the audit trail (admins only)."""
    viewer.actor.require_admin()
    state = get_state(request)
    trail = await audit_trail.read(
        state.db, viewer.actor, AUDIT_PAGE_SIZE, (page_number - 1) * AUDIT_PAGE_SIZE
    )
    return page(
        request,
        "admin.html",
        viewer,
        users=await state.accounts.list_users(),
        roles=[role.value for role in Role],
        trail=trail,
        page_number=page_number,
        pages=max(1, -(-trail.total // AUDIT_PAGE_SIZE)),
    )


def _role(form: FormData) -> Role:
    raw = forms.text(form, "role")
    if raw not in set(Role):
        raise errors.BadRequest(f"the role must be one of {', '.join(Role)}")
    return Role(raw)


@router.post("/admin/users")
async def create_user(request: Request, viewer: ChangingViewer) -> Response:
    """Make an account (admins only)."""
    viewer.actor.require_admin()
    form = await forms.read(request)
    username = forms.text(form, "username")
    if not 1 <= len(username) <= 64 or not set(username) <= USERNAME_CHARS:
        raise errors.BadRequest("a username is 1 to 64 letters, digits or _ . @ -")
    state = get_state(request)
    await state.accounts.create_user(
        username, new_password(form, "password"), _role(form), viewer.actor
    )
    return done(request, f"Account {username!r} created.", "/admin")


@router.post("/admin/users/{user_id:int}")
async def change_user(request: Request, user_id: UserId, viewer: ChangingViewer) -> Response:
    """Change a role, or disable or enable an account (admins only)."""
    form = await forms.read(request)
    active = forms.text(form, "active")
    if active not in ("", "yes", "no"):
        raise errors.BadRequest("active must be yes or no")
    role = _role(form) if forms.text(form, "role") else None
    state = get_state(request)
    user = await state.accounts.change_account(
        viewer.actor, user_id, role, None if not active else active == "yes"
    )
    state_word = "active" if user.is_active else "disabled"
    return done(request, f"{user.username}: {user.role}, {state_word}.", "/admin")


@router.post("/admin/users/{user_id:int}/password")
async def reset_password(request: Request, user_id: UserId, viewer: ChangingViewer) -> Response:
    """Set another account's password (admins only); its sessions end."""
    form = await forms.read(request)
    await get_state(request).accounts.reset_password(
        viewer.actor, user_id, new_password(form, "password")
    )
    return done(request, "Password set; that account's sessions ended.", "/admin")
