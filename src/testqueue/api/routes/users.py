"""Accounts: who am I, and (admins) who else."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from testqueue import security
from testqueue.api.deps import AdminActor, CurrentActor, State
from testqueue.models import User
from testqueue.schemas import UserCreate, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me")
async def read_me(state: State, actor: CurrentActor) -> UserPublic:
    """The signed-in account."""
    return await _read_user(state, actor.id)


@router.get("")
async def list_users(state: State, _admin: AdminActor) -> list[UserPublic]:
    """Every account (admins only)."""
    async with state.db.read() as conn:
        rows = (await conn.execute(select(User.__table__).order_by(User.id))).mappings().all()
    return [UserPublic.model_validate(dict(row)) for row in rows]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(state: State, body: UserCreate, _admin: AdminActor) -> UserPublic:
    """Create an account (admins only); 409 if the username is taken."""
    user_id = await security.create_user(state.db, body.username, body.password, body.role)
    return await _read_user(state, user_id)


async def _read_user(state: State, user_id: int) -> UserPublic:
    async with state.db.read() as conn:
        row = (
            (await conn.execute(select(User.__table__).where(User.id == user_id))).mappings().one()
        )
    return UserPublic.model_validate(dict(row))
