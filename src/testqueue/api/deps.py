"""What routes depend on: the app's state, the signed-in user, the admin check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import bindparam, select

from testqueue import errors, security
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.models import Role, User
from testqueue.runners import Registry
from testqueue.schemas import MAX_BIGINT, MAX_ROW_ID

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)

# Bounded so a huge number is a 422, not a database error (see schemas.MAX_ROW_ID).
TestCaseId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
ExecutionId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
ArtifactId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_BIGINT)]


@dataclass
class AppState:
    """Everything one app instance shares between requests."""

    settings: Settings
    db: Database
    registry: Registry
    secret_key: str = ""
    dispatcher: Dispatcher | None = None


@dataclass(frozen=True)
class Actor:
    """The signed-in user, as much as routes need."""

    id: int
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def owner_filter(self) -> int | None:
        """None for admins (any owner), else the user's own id."""
        return None if self.is_admin else self.id


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.testqueue
    return state


async def _state(request: Request) -> AppState:
    """Async so that FastAPI calls it inline rather than in its thread pool."""
    return get_state(request)


State = Annotated[AppState, Depends(_state)]


_ACTOR = select(User.id, User.username, User.role, User.is_active).where(
    User.id == bindparam("user_id")
)


async def current_actor(state: State, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    if not token:
        raise errors.Unauthorized()
    return await actor_for_token(state, token)


async def actor_for_token(state: AppState, token: str) -> Actor:
    """The active user a token names; `errors.Unauthorized` otherwise."""
    user_id = security.decode_token(state.secret_key, token)
    async with state.db.read() as conn:
        row = (await conn.execute(_ACTOR, {"user_id": user_id})).one_or_none()
    if row is None or not row.is_active:
        raise errors.Unauthorized("this account no longer exists or is disabled")
    return Actor(row.id, row.username, Role(row.role))


CurrentActor = Annotated[Actor, Depends(current_actor)]


async def admin_actor(actor: CurrentActor) -> Actor:
    if not actor.is_admin:
        raise errors.Forbidden("only an admin may do this")
    return actor


AdminActor = Annotated[Actor, Depends(admin_actor)]
