"""Accounts: who am I, my password and tokens, and (admins) everyone's accounts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from testqueue.api.contract import errors
from testqueue.api.deps import AdminActor, CurrentActor, State
from testqueue.models import utcnow
from testqueue.params import UserId
from testqueue.schemas import (
    AccessTokenCreate,
    AccessTokenCreated,
    AccessTokenPublic,
    PasswordChange,
    PasswordReset,
    UserChange,
    UserCreate,
    UserPublic,
)
from testqueue.vocabulary import MAX_INT_ID

router = APIRouter(prefix="/users", tags=["users"])
NO_CONTENT = status.HTTP_204_NO_CONTENT
TokenId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]


@router.get(
    "/me",
)
async def read_me(state: State, actor: CurrentActor) -> UserPublic:
    """The signed-in account (as the token check just read it: active, by definition)."""
    if actor.created_at is None:
        return await state.accounts.read_user(actor.id)
    return UserPublic(
        id=actor.id,
        username=actor.username,
        role=actor.role,
        is_active=True,
        created_at=actor.created_at,
    )


@router.post("/me/password", status_code=NO_CONTENT, responses=errors(403))
async def change_my_password(state: State, body: PasswordChange, actor: CurrentActor) -> Response:
    """Change your own password (the current one is asked for); every session of yours ends."""
    await state.accounts.change_own_password(actor, body.current_password, body.new_password)
    return Response(status_code=NO_CONTENT)


@router.get(
    "/me/tokens",
)
async def list_my_tokens(state: State, actor: CurrentActor) -> list[AccessTokenPublic]:
    """Your personal access tokens (never the tokens themselves)."""
    return await state.accounts.list_access_tokens(actor)


@router.post(
    "/me/tokens",
    status_code=status.HTTP_201_CREATED,
)
async def create_my_token(
    state: State, body: AccessTokenCreate, actor: CurrentActor
) -> AccessTokenCreated:
    """A personal access token for CI and scripts, acting with your rights.

    The answer holds the token once; only its hash is kept. Send it as
    `Authorization: Bearer <token>`.
    """
    days = body.expires_in_days
    expires_at = utcnow() + timedelta(days=days) if days else None
    return await state.accounts.create_access_token(actor, body.name, expires_at)


@router.delete("/me/tokens/{token_id}", status_code=NO_CONTENT, responses=errors(404))
async def revoke_my_token(state: State, token_id: TokenId, actor: CurrentActor) -> Response:
    """Revoke one of your personal access tokens; it stops working at once."""
    await state.accounts.revoke_access_token(actor, token_id)
    return Response(status_code=NO_CONTENT)


@router.get("", responses=errors(403))
async def list_users(state: State, _admin: AdminActor) -> list[UserPublic]:
    """Every account (admins only)."""
    return await state.accounts.list_users()


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(403, 409))
async def create_user(state: State, body: UserCreate, admin: AdminActor) -> UserPublic:
    """Create an account (admins only); 409 if the username is taken."""
    user_id = await state.accounts.create_user(body.username, body.password, body.role, admin)
    return await state.accounts.read_user(user_id)


@router.get("/{user_id}", responses=errors(403, 404))
async def read_user(state: State, user_id: UserId, actor: CurrentActor) -> UserPublic:
    """One account: your own, or any for an admin."""
    if user_id != actor.id:
        actor.require_admin()
    return await state.accounts.read_user(user_id)


@router.patch("/{user_id}", responses=errors(403, 404, 409))
async def change_user(
    state: State, user_id: UserId, body: UserChange, admin: AdminActor
) -> UserPublic:
    """Change a role, or disable or re-enable an account (admins only).

    The last active admin can be neither demoted nor disabled (409).
    Disabling ends the account's sessions and stops its access tokens.
    """
    return await state.accounts.change_account(admin, user_id, body.role, body.is_active)


@router.put("/{user_id}/password", status_code=NO_CONTENT, responses=errors(403, 404))
async def reset_password(
    state: State, user_id: UserId, body: PasswordReset, admin: AdminActor
) -> Response:
    """Set another account's password (admins only); its sessions end."""
    await state.accounts.reset_password(admin, user_id, body.password)
    return Response(status_code=NO_CONTENT)


@router.delete("/{user_id}/sessions", status_code=NO_CONTENT, responses=errors(403, 404))
async def end_sessions(state: State, user_id: UserId, actor: CurrentActor) -> Response:
    """Sign an account out everywhere: your own, or any for an admin."""
    await state.accounts.end_sessions(actor, user_id)
    return Response(status_code=NO_CONTENT)
