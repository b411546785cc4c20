"""What routes depend on: the app's state and the signed-in actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from testqueue import errors
from testqueue.services.accounts import Actor
from testqueue.state import AppState, get_state

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


async def _state(request: Request) -> AppState:
    """Async so that FastAPI calls it inline rather than in its thread pool."""
    return get_state(request)


State = Annotated[AppState, Depends(_state)]


async def current_actor(state: State, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    if not token:
        raise errors.Unauthorized()
    return await state.accounts.actor_for_token(token)


CurrentActor = Annotated[Actor, Depends(current_actor)]


async def admin_actor(actor: CurrentActor) -> Actor:
    actor.require_admin()
    return actor


AdminActor = Annotated[Actor, Depends(admin_actor)]
