"""Session tokens and the secret key that signs them.

A session token is an HS256 JWT that names its user and its session (a row
in `sessions`, see `services.accounts`) and expires after ACCESS_TOKEN_TTL;
the signature turns away forged ones before any database work. When SECRET_KEY is
unset, one is generated once and kept beside the SQLite file (mode 0600) or,
on PostgreSQL, in the database so every host signs alike. It is never logged.
Passwords and accounts are `services.accounts`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
from pathlib import Path

import jwt
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Database, sqlite_path
from testqueue.models import AppSecret
from testqueue.vocabulary import MAX_INT_ID, parse_whole

ALGORITHM = "HS256"
SECRET_FILE_NAME = ".testqueue-secret"


def create_token(secret: str, user_id: int, ttl_s: int, session_id: str) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "sid": session_id, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> tuple[int, str]:
    """The user id and session id in a valid token; `errors.Unauthorized` otherwise."""
    user_id, session_id, expires = _verified(secret, token)
    if expires <= time.time():
        raise errors.Unauthorized("the token has expired: sign in again")
    return user_id, session_id


# Every request carries its token: its signature is checked once per process and
# token (the same string says the same thing), its expiry every time.
@functools.lru_cache(maxsize=4096)
def _verified(secret: str, token: str) -> tuple[int, str, float]:
    invalid = errors.Unauthorized("the token is not valid: sign in again")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "sid"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise invalid from exc
    subject, session_id, expires = claims["sub"], claims["sid"], claims["exp"]
    if not (
        isinstance(subject, str)
        and isinstance(session_id, str)
        and len(session_id) <= 64
        and isinstance(expires, int | float)
    ):
        raise invalid
    try:
        return parse_whole(subject, 1, MAX_INT_ID), session_id, float(expires)
    except ValueError as exc:
        raise invalid from exc


async def load_secret_key(settings: Settings, db: Database) -> str:
    """SECRET_KEY, or the one generated on first start and kept since."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = sqlite_path(settings.database_url)
    if path is not None:
        return secret_file(path.parent / SECRET_FILE_NAME)
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


def secret_file(path: Path) -> str:
    """The key kept in `path`, made on first use.

    The new key is written whole to a temporary file and linked into place,
    which fails if another process got there first: then that key is read.
    So two processes starting at once never read an empty or half-written key.
    """
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return value
