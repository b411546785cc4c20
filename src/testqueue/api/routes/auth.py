"""Sign in and out: OAuth2 password form in, a session's bearer token out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.schemas import Token

router = APIRouter(prefix="/auth", tags=["auth"])


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login", responses=errors(401, 429))
async def login(
    state: State, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    """Exchange a username and password (form fields) for a bearer token.

    After repeated failures for one username or from one address, answers
    429 with `Retry-After` until the lockout ends.
    """
    token, ttl = await state.accounts.sign_in(form.username, form.password, client_address(request))
    return Token(access_token=token, expires_in=ttl)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(409))
async def logout(state: State, actor: CurrentActor) -> Response:
    """End this session: its token stops working at once."""
    await state.accounts.sign_out(actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
