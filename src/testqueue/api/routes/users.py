"""Accounts: who am I, and (admins) who else."""

from __future__ import annotations

from fastapi import APIRouter, status

from testqueue.api.deps import AdminActor, CurrentActor, State
from testqueue.schemas import UserCreate, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me")
async def read_me(state: State, actor: CurrentActor) -> UserPublic:
    """The signed-in account."""
    return await state.accounts.read_user(actor.id)


@router.get("")
async def list_users(state: State, _admin: AdminActor) -> list[UserPublic]:
    """Every account (admins only)."""
    return await state.accounts.list_users()


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(state: State, body: UserCreate, _admin: AdminActor) -> UserPublic:
    """Create an account (admins only); 409 if the username is taken."""
    user_id = await state.accounts.create_user(body.username, body.password, body.role)
    return await state.accounts.read_user(user_id)
