"""Passwords, tokens, the secret key and the first admin account.

Passwords are hashed with Argon2id. Tokens are HS256 JWTs that expire after
ACCESS_TOKEN_TTL. When SECRET_KEY is unset, one is generated once and kept
beside the SQLite file (mode 0600) or, on PostgreSQL, in the database so
every host signs alike. It is never logged.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Database, sqlite_path
from testqueue.models import AppSecret, Role, User

ALGORITHM = "HS256"
SECRET_FILE_NAME = ".testqueue-secret"
ADMIN_USERNAME = "admin"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (no such user) it checks a decoy
    and says no, so the answer takes as long and the time gives no name away."""
    try:
        if password_hash is None:
            _hasher.verify(_decoy_hash(_hasher), password)
            return False
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _decoy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def create_token(secret: str, user_id: int, ttl_s: int) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> int:
    """The user id in a valid token; `errors.Unauthorized` says what is wrong otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
        return int(claims["sub"])
    except jwt.ExpiredSignatureError as exc:
        raise errors.Unauthorized("the token has expired: sign in again") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise errors.Unauthorized("the token is not valid: sign in again") from exc


async def load_secret_key(settings: Settings, db: Database) -> str:
    """SECRET_KEY, or the one generated on first start and kept since."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = sqlite_path(settings.database_url)
    if path is not None:
        return _secret_file(path.parent / SECRET_FILE_NAME)
    query = select(AppSecret.value).where(AppSecret.name == "secret_key")
    try:
        async with db.write() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
            if value is None:
                value = secrets.token_urlsafe(48)
                await conn.execute(insert(AppSecret).values(name="secret_key", value=value))
        return value
    except IntegrityError:  # another host generated it first: use theirs
        async with db.read() as conn:
            return str((await conn.execute(query)).scalar_one())


def _secret_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


@dataclass(frozen=True)
class Bootstrap:
    """The admin account made on first start; `password` is set only if it was generated."""

    username: str
    password: str | None


async def ensure_admin(settings: Settings, db: Database) -> Bootstrap | None:
    """Create `admin` when there are no users yet; None when there were some."""
    async with db.read() as conn:
        if (await conn.execute(select(func.count()).select_from(User))).scalar_one():
            return None
    given = settings.testqueue_admin_password
    password = given.get_secret_value() if given else secrets.token_urlsafe(12)
    try:
        await create_user(db, ADMIN_USERNAME, password, Role.ADMIN)
    except errors.InvalidTransition:
        return None  # another process made it first
    return Bootstrap(ADMIN_USERNAME, None if given else password)


async def create_user(db: Database, username: str, password: str, role: Role) -> int:
    """A new account; `errors.InvalidTransition` (409) if the name is taken."""
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        async with db.write() as conn:
            result = await conn.execute(
                insert(User)
                .values(
                    username=username,
                    password_hash=password_hash,
                    role=role.value,
                    is_active=True,
                )
                .returning(User.id)
            )
            return int(result.scalar_one())
    except IntegrityError as exc:
        raise errors.InvalidTransition(f"the username {username!r} is taken") from exc
