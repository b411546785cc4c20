"""Sign in: OAuth2 password form in, bearer token out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from testqueue.api.deps import State
from testqueue.schemas import Token

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login")
async def login(state: State, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """Exchange a username and password (form fields) for a bearer token."""
    user_id = await state.accounts.authenticate(form.username, form.password)
    return Token(
        access_token=state.accounts.issue_token(user_id),
        expires_in=state.settings.access_token_ttl,
    )
