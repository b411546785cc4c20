"""Accounts: who may sign in, with which password, and what a token says about them.

Passwords are hashed with Argon2id, off the event loop. An unknown name
costs a full password check too, so the answer's timing gives no names away.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError

from testqueue import errors, security
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import User
from testqueue.schemas import UserPublic
from testqueue.vocabulary import Role

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class Actor:
    """The signed-in user, as much as the rules need."""

    id: int
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def owner_filter(self) -> int | None:
        """None for admins (any owner), else the user's own id."""
        return None if self.is_admin else self.id

    def require_admin(self) -> None:
        """`errors.Forbidden` unless this is an admin."""
        if not self.is_admin:
            raise errors.Forbidden("only an admin may do this")


@dataclass(frozen=True)
class Bootstrap:
    """The admin account made on first start; `password` is set only if it was generated."""

    username: str
    password: str | None


_ACTOR = select(User.id, User.username, User.role, User.is_active).where(
    User.id == bindparam("user_id")
)
_SIGN_IN = select(User.id, User.password_hash, User.is_active).where(
    User.username == bindparam("username")
)


class Accounts:
    """The accounts of one app: its password hasher and the key that signs its tokens."""

    def __init__(self, settings: Settings, db: Database, hasher: PasswordHasher | None = None):
        self.settings = settings
        self.db = db
        self.hasher = hasher or PasswordHasher()
        self.secret_key = ""
        self._decoy: str | None = None

    async def start(self) -> Bootstrap | None:
        """Load the signing key and make the first admin when there are no accounts."""
        self.secret_key = await security.load_secret_key(self.settings, self.db)
        return await self.ensure_admin()

    # -- passwords ---------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_password(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash (no such user) it checks a decoy
        and says no, so the answer takes as long."""
        try:
            if password_hash is None:
                if self._decoy is None:
                    self._decoy = self.hasher.hash(secrets.token_urlsafe(16))
                self.hasher.verify(self._decoy, password)
                return False
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # -- signing in --------------------------------------------------------------------

    async def authenticate(self, username: str, password: str) -> int:
        """The id of the active user with these credentials; `errors.Unauthorized` otherwise."""
        if "\0" in username:
            # No username holds NUL, and PostgreSQL refuses it in a query.
            raise errors.Unauthorized("wrong username or password")
        async with self.db.read() as conn:
            row = (await conn.execute(_SIGN_IN, {"username": username})).one_or_none()
        # Argon2 takes a CPU-heavy while: off the event loop, or it stalls every request.
        matches = await asyncio.to_thread(
            self.verify_password, row.password_hash if row else None, password
        )
        if row is None or not row.is_active or not matches:
            raise errors.Unauthorized("wrong username or password")
        return int(row.id)

    def issue_token(self, user_id: int) -> str:
        return security.create_token(self.secret_key, user_id, self.settings.access_token_ttl)

    async def actor_for_token(self, token: str) -> Actor:
        """The active user a token names; `errors.Unauthorized` otherwise."""
        user_id = security.decode_token(self.secret_key, token)
        async with self.db.read() as conn:
            row = (await conn.execute(_ACTOR, {"user_id": user_id})).one_or_none()
        if row is None or not row.is_active:
            raise errors.Unauthorized("this account no longer exists or is disabled")
        return Actor(row.id, row.username, Role(row.role))

    # -- accounts ----------------------------------------------------------------------

    async def ensure_admin(self) -> Bootstrap | None:
        """Create `admin` when there are no users yet; None when there were some."""
        async with self.db.read() as conn:
            if (await conn.execute(select(func.count()).select_from(User))).scalar_one():
                return None
        given = self.settings.testqueue_admin_password
        password = given.get_secret_value() if given else secrets.token_urlsafe(12)
        try:
            await self.create_user(ADMIN_USERNAME, password, Role.ADMIN)
        except errors.InvalidTransition:
            return None  # another process made it first
        return Bootstrap(ADMIN_USERNAME, None if given else password)

    async def create_user(self, username: str, password: str, role: Role) -> int:
        """A new account; `errors.InvalidTransition` (409) if the name is taken."""
        password_hash = await asyncio.to_thread(self.hash_password, password)
        values: dict[str, Any] = {
            "username": username,
            "password_hash": password_hash,
            "role": role.value,
            "is_active": True,
        }
        try:
            async with self.db.write() as conn:
                result = await conn.execute(insert(User).values(**values).returning(User.id))
                return int(result.scalar_one())
        except IntegrityError as exc:
            raise errors.InvalidTransition(f"the username {username!r} is taken") from exc

    async def list_users(self) -> list[UserPublic]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(User.__table__).order_by(User.id))).mappings().all()
        return [UserPublic.model_validate(dict(row)) for row in rows]

    async def read_user(self, user_id: int) -> UserPublic:
        async with self.db.read() as conn:
            row = (
                (await conn.execute(select(User.__table__).where(User.id == user_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise errors.NotFound(f"user {user_id} does not exist")
        return UserPublic.model_validate(dict(row))

    async def usernames(self, user_ids: set[int | None]) -> dict[int, str]:
        """The names of these accounts, for pages that show who did what."""
        wanted = {i for i in user_ids if i is not None}
        if not wanted:
            return {}
        async with self.db.read() as conn:
            rows = await conn.execute(select(User.id, User.username).where(User.id.in_(wanted)))
            return {row.id: row.username for row in rows}
