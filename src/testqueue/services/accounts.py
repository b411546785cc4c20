"""Accounts: who may sign in, with which password, and what a token says about them.

A sign-in opens a session (a row in `sessions`) and hands out a signed token
that names it; every request looks the session up together with its account
in one statement, so signing out, a password change, a disabled account or
"sign out everywhere" ends tokens at once. Personal access tokens are for
CI and scripts: only their SHA-256 is kept. Passwords are hashed with
Argon2id in a small pool of threads of its own, so a flood of sign-ins
cannot take the event loop's CPU, and failed sign-ins are throttled per
username and per client address (`throttle`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from testqueue import audit, errors, security
from testqueue.config import Settings
from testqueue.database import Conn, Database
from testqueue.models import AccessToken, Session, User, as_utc, utcnow
from testqueue.schemas import AccessTokenCreated, AccessTokenPublic, UserPublic
from testqueue.services import throttle
from testqueue.vocabulary import Role

ADMIN_USERNAME = "admin"
ACCESS_TOKEN_PREFIX = "tq_"
# A personal access token's last use is written at most this often.
LAST_USED_EVERY = timedelta(seconds=60)

T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """The signed-in user, as much as the rules need, and how they signed in."""

    id: int
    username: str
    role: Role
    session_id: str | None = None
    token_id: int | None = None
    # When the account was made, as the token check read it (`GET /users/me` needs no more).
    created_at: datetime | None = None

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

    def note(self, action: str, target: str = "", **detail: Any) -> audit.Note:
        """An audit note of something this actor did."""
        actor_id = None if self is CONSOLE else self.id
        return audit.Note(actor_id, self.username, action, target, detail)


# Someone at the server's console: `testqueue user ...` acts with an admin's rights.
CONSOLE = Actor(0, "console", Role.ADMIN)


@dataclass(frozen=True)
class Bootstrap:
    """The admin account made on first start; `password` is set only if it was generated."""

    username: str
    password: str | None


U = User
_BY_SESSION = (
    select(U.id, U.username, U.role, U.is_active, U.created_at)
    .join(Session, Session.user_id == U.id)
    .where(Session.id == bindparam("sid"), Session.expires_at > bindparam("now"))
)
_BY_ACCESS_TOKEN = (
    select(
        U.id,
        U.username,
        U.role,
        U.is_active,
        U.created_at,
        AccessToken.id.label("token_id"),
        AccessToken.expires_at,
        AccessToken.last_used_at,
    )
    .join(AccessToken, AccessToken.user_id == U.id)
    .where(AccessToken.token_hash == bindparam("token_hash"))
)
_SIGN_IN = select(U.id, U.password_hash, U.is_active).where(U.username == bindparam("username"))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """The accounts of one app: its password hasher, its hashing threads and its signing key."""

    def __init__(self, settings: Settings, db: Database, hasher: PasswordHasher | None = None):
        self.settings = settings
        self.db = db
        self.hasher = hasher or PasswordHasher()
        self.secret_key = ""
        self._decoy: str | None = None
        self.lockouts = throttle.Lockouts()
        self._pool = ThreadPoolExecutor(
            settings.password_hash_threads, thread_name_prefix="password-hash"
        )

    async def start(self) -> Bootstrap | None:
        """Load the signing key and make the first admin when there are no accounts."""
        self.secret_key = await security.load_secret_key(self.settings, self.db)
        return await self.ensure_admin()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- passwords ---------------------------------------------------------------------

    async def _hashing(self, work: Any, *args: Any) -> Any:
        """Argon2 takes a CPU-heavy while: in the pool, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash (no such user) it checks a decoy
        and says no, so the answer takes as long and its timing gives no name away."""
        try:
            if password_hash is None:
                if self._decoy is None:
                    self._decoy = self.hasher.hash(secrets.token_urlsafe(16))
                self.hasher.verify(self._decoy, password)
                return False
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def verify_password(self, password_hash: str | None, password: str) -> bool:
        return bool(await self._hashing(self._verify, password_hash, password))

    async def hash_password(self, password: str) -> str:
        return str(await self._hashing(self.hasher.hash, password))

    # -- signing in and out ------------------------------------------------------------

    async def sign_in(self, username: str, password: str, address: str) -> tuple[str, int]:
        """A new session's token and its lifetime in seconds for good credentials.

        `errors.Unauthorized` for wrong ones, `errors.TooManyRequests` while this
        username or this client address has failed too often.
        """
        limits = throttle.Limits.of(self.settings)
        await throttle.refuse_if_blocked(self.db, self.lockouts, username, address)
        user_id = await self._check_password(username, password)
        if user_id is None:
            await throttle.record_failure(self.db, self.lockouts, limits, username, address)
            raise errors.Unauthorized("wrong username or password")
        ttl = self.settings.access_token_ttl
        session_id = secrets.token_urlsafe(24)
        now = utcnow()
        async with self.db.write() as conn:
            await throttle.forget_username(conn, username)
            await conn.execute(
                delete(Session).where(Session.user_id == user_id, Session.expires_at <= now)
            )
            await conn.execute(
                insert(Session).values(
                    id=session_id,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        return security.create_token(self.secret_key, user_id, ttl, session_id), ttl

    async def _check_password(self, username: str, password: str) -> int | None:
        if "\0" in username:
            # No username holds NUL, and PostgreSQL refuses it in a query.
            username = ""
        async with self.db.read() as conn:
            row = (await conn.execute(_SIGN_IN, {"username": username})).one_or_none()
        # It runs for unknown names too, so timing tells no names apart.
        matches = await self.verify_password(row.password_hash if row else None, password)
        if row is None or not row.is_active or not matches:
            return None
        return int(row.id)

    async def sign_out(self, actor: Actor) -> None:
        """End the session the actor signed in with (a personal token is revoked apart)."""
        if actor.session_id is None:
            raise errors.InvalidTransition(
                "this request carries a personal access token, not a session: revoke the "
                "token at DELETE /api/v1/users/me/tokens/{id} instead"
            )
        async with self.db.write() as conn:
            await conn.execute(delete(Session).where(Session.id == actor.session_id))

    async def actor_for_token(self, token: str) -> Actor:
        """The active user a bearer token (a session's or a personal one) stands for."""
        if token.startswith(ACCESS_TOKEN_PREFIX):
            return await self._actor_for_access_token(token)
        user_id, session_id = security.decode_token(self.secret_key, token)
        async with self.db.read() as conn:
            row = (
                await conn.execute(_BY_SESSION, {"sid": session_id, "now": utcnow()})
            ).one_or_none()
        if row is None or row.id != user_id:
            raise errors.Unauthorized("this session has ended: sign in again")
        if not row.is_active:
            raise errors.Unauthorized("this account is disabled")
        return Actor(
            row.id, row.username, Role(row.role), session_id=session_id, created_at=row.created_at
        )

    async def _actor_for_access_token(self, token: str) -> Actor:
        now = utcnow()
        async with self.db.read() as conn:
            found = await conn.execute(_BY_ACCESS_TOKEN, {"token_hash": token_hash(token)})
            row = found.one_or_none()
        if row is None:
            raise errors.Unauthorized("this access token is not valid or was revoked")
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            raise errors.Unauthorized("this access token has expired: make a new one")
        if not row.is_active:
            raise errors.Unauthorized("this account is disabled")
        if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_EVERY:
            async with self.db.write_one() as conn:
                await conn.execute(
                    update(AccessToken)
                    .where(AccessToken.id == row.token_id)
                    .values(last_used_at=now)
                )
        return Actor(
            row.id, row.username, Role(row.role), token_id=row.token_id, created_at=row.created_at
        )

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

    async def create_user(
        self, username: str, password: str, role: Role, by: Actor | None = None
    ) -> int:
        """A new account; `errors.InvalidTransition` (409) if the name is taken."""
        values: dict[str, Any] = {
            "username": username,
            "password_hash": await self.hash_password(password),
            "role": role.value,
            "is_active": True,
            "created_at": utcnow(),
        }
        try:
            async with self.db.write() as conn:
                result = await conn.execute(insert(User).values(**values).returning(User.id))
                user_id = int(result.scalar_one())
                note = by.note("user.create", username, role=role.value) if by else None
                await audit.write(conn, note)
                return user_id
        except IntegrityError as exc:
            raise errors.InvalidTransition(f"the username {username!r} is taken") from exc

    async def list_users(self) -> list[UserPublic]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(User.__table__).order_by(User.id))).mappings().all()
        return [UserPublic.model_validate(dict(row)) for row in rows]

    async def read_user(self, user_id: int) -> UserPublic:
        async with self.db.read() as conn:
            return UserPublic.model_validate(dict(await _user(conn, user_id)))

    async def find_user(self, username: str) -> UserPublic:
        async with self.db.read() as conn:
            row = (
                (await conn.execute(select(User.__table__).where(User.username == username)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise errors.NotFound(f"there is no account named {username!r}")
        return UserPublic.model_validate(dict(row))

    async def usernames(self, user_ids: set[int | None]) -> dict[int, str]:
        """The names of these accounts, for pages that show who did what."""
        wanted = {i for i in user_ids if i is not None}
        if not wanted:
            return {}
        async with self.db.read() as conn:
            rows = await conn.execute(select(User.id, User.username).where(User.id.in_(wanted)))
            return {row.id: row.username for row in rows}

    async def change_own_password(self, actor: Actor, current: str, new: str) -> None:
        """Check the current password, set the new one, and end every session of the account."""
        async with self.db.read() as conn:
            row = await _user(conn, actor.id)
        if not await self.verify_password(row["password_hash"], current):
            raise errors.Forbidden("the current password is not right")
        await self._set_password(actor.id, new, actor.note("user.password", actor.username))

    async def reset_password(self, actor: Actor, user_id: int, new: str) -> None:
        """An admin sets another account's password; its sessions end."""
        actor.require_admin()
        async with self.db.read() as conn:
            name = (await _user(conn, user_id))["username"]
        await self._set_password(user_id, new, actor.note("user.password_reset", name))

    async def _set_password(self, user_id: int, password: str, note: audit.Note) -> None:
        password_hash = await self.hash_password(password)
        async with self.db.write() as conn:
            await conn.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )
            await conn.execute(delete(Session).where(Session.user_id == user_id))
            await audit.write(conn, note)

    async def change_account(
        self, actor: Actor, user_id: int, role: Role | None, is_active: bool | None
    ) -> UserPublic:
        """An admin changes a role or disables (or re-enables) an account.

        The last active admin can be neither demoted nor disabled. Disabling
        ends the account's sessions; its personal tokens stop working with it.
        """
        actor.require_admin()
        async with self.db.write() as conn:
            row = await _user(conn, user_id)
            demoted = role is not None and role != Role.ADMIN
            disabled = is_active is False
            if row["role"] == Role.ADMIN and row["is_active"] and (demoted or disabled):
                await _keep_an_admin(conn, user_id)
            changes: dict[str, Any] = {}
            if role is not None and role != row["role"]:
                changes["role"] = role.value
                await audit.write(conn, actor.note("user.role", row["username"], role=role.value))
            if is_active is not None and is_active != row["is_active"]:
                changes["is_active"] = is_active
                action = "user.enable" if is_active else "user.disable"
                await audit.write(conn, actor.note(action, row["username"]))
            if changes:
                await conn.execute(update(User).where(User.id == user_id).values(**changes))
            if disabled:
                await conn.execute(delete(Session).where(Session.user_id == user_id))
        return await self.read_user(user_id)

    async def end_sessions(self, actor: Actor, user_id: int) -> int:
        """Sign an account out everywhere (the account itself or an admin); returns how many."""
        if user_id != actor.id:
            actor.require_admin()
        async with self.db.write() as conn:
            name = (await _user(conn, user_id))["username"]
            ended = await conn.execute(delete(Session).where(Session.user_id == user_id))
            await audit.write(conn, actor.note("user.sign_out_everywhere", name))
        return int(ended.rowcount)

    # -- personal access tokens --------------------------------------------------------

    async def create_access_token(
        self, actor: Actor, name: str, expires_at: datetime | None
    ) -> AccessTokenCreated:
        """A new token for the actor's own account; its text is shown this once."""
        token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.write() as conn:
            result = await conn.execute(
                insert(AccessToken)
                .values(
                    user_id=actor.id,
                    name=name,
                    token_hash=token_hash(token),
                    prefix=token[:10],
                    created_at=now,
                    expires_at=expires_at,
                )
                .returning(*AccessToken.__table__.c)
            )
            row = result.mappings().one()
        return AccessTokenCreated(**_token_public(row).model_dump(), token=token)

    async def list_access_tokens(self, actor: Actor) -> list[AccessTokenPublic]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(AccessToken.__table__)
                .where(AccessToken.user_id == actor.id)
                .order_by(AccessToken.id)
            )
            return [_token_public(row) for row in rows.mappings()]

    async def revoke_access_token(self, actor: Actor, token_id: int) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(AccessToken).where(
                    AccessToken.id == token_id, AccessToken.user_id == actor.id
                )
            )
        if result.rowcount == 0:
            raise errors.NotFound(f"you have no access token {token_id}")


def _token_public(row: Any) -> AccessTokenPublic:
    return AccessTokenPublic.model_validate(
        {key: row[key] for key in AccessTokenPublic.model_fields}
    )


async def _user(conn: Conn, user_id: int) -> Any:
    row = (
        (await conn.execute(select(User.__table__).where(User.id == user_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise errors.NotFound(f"user {user_id} does not exist")
    return row


async def _keep_an_admin(conn: Conn, user_id: int) -> None:
    """Refuse when `user_id` is the last active admin.

    Every active admin's row is locked first, in id order (PostgreSQL;
    SQLite's write lock already serialises writers), so two admins demoting
    each other at once cannot both pass: the second sees the first's change.
    """
    admins = (
        select(User.id)
        .where(and_(User.role == Role.ADMIN, User.is_active.is_(True)))
        .order_by(User.id)
        .with_for_update()
    )
    if not [row for row in (await conn.execute(admins)).all() if row.id != user_id]:
        raise errors.InvalidTransition(
            "this is the last active admin: make another account an admin first"
        )
