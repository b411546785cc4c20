"""Sign in: OAuth2 password form in, bearer token out."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from testqueue import errors, security
from testqueue.api.deps import State
from testqueue.models import User
from testqueue.schemas import Token

router = APIRouter(prefix="/auth", tags=["auth"])


async def authenticate(state: State, username: str, password: str) -> int:
    """The id of the active user with these credentials; 401 otherwise."""
    if "\0" in username:
        # No username holds NUL, and PostgreSQL refuses it in a query (a 500, not a 401).
        raise errors.Unauthorized("wrong username or password")
    async with state.db.read() as conn:
        row = (
            await conn.execute(
                select(User.id, User.password_hash, User.is_active).where(User.username == username)
            )
        ).one_or_none()
    # Argon2 takes a CPU-heavy while: off the event loop, or it stalls every
    # request. It runs for unknown names too, so timing tells no names apart.
    matches = await asyncio.to_thread(
        security.verify_password, row.password_hash if row else None, password
    )
    if row is None or not row.is_active or not matches:
        raise errors.Unauthorized("wrong username or password")
    return int(row.id)


@router.post("/login")
async def login(state: State, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """Exchange a username and password (form fields) for a bearer token."""
    user_id = await authenticate(state, form.username, form.password)
    ttl = state.settings.access_token_ttl
    return Token(access_token=security.create_token(state.secret_key, user_id, ttl), expires_in=ttl)
