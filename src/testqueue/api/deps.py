"""What routes depend on: the app's state and the signed-in actor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from testqueue import errors
from testqueue.api import contract
from testqueue.services.accounts import Actor
from testqueue.state import AppState, get_state

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)


async def _state(request: Request) -> AppState:
    """Async so that FastAPI calls it inline rather than in its thread pool."""
    return get_state(request)


State = Annotated[AppState, Depends(_state)]


def query_once(prefix: str) -> Callable[[Request], Awaitable[None]]:
    """For the routes under `prefix`: a query parameter that takes one value is given once
    (of `?search=a&search=b` the API would otherwise read the last and drop the rest)."""

    async def once(request: Request) -> None:
        given = Counter(name for name, _ in request.query_params.multi_items())
        repeated = {name for name, times in given.items() if times > 1}
        route = request.scope.get("route")
        if not repeated or route is None:
            return
        # The route as its router holds it: with the prefix or, in an included router, without.
        path = route.path if route.path.startswith(prefix) else prefix + route.path
        for name in sorted(repeated - contract.repeatable(request.app, path, request.method)):
            raise errors.InvalidInput(f"{name}: give it once, not {given[name]} times")

    return once


async def current_actor(state: State, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    if not token:
        raise errors.Unauthorized()
    return await state.accounts.actor_for_token(token)


CurrentActor = Annotated[Actor, Depends(current_actor)]


async def admin_actor(actor: CurrentActor) -> Actor:
    actor.require_admin()
    return actor


AdminActor = Annotated[Actor, Depends(admin_actor)]
