"""Throttled sign-in: too many failures for one username or from one client address.

After LOGIN_MAX_FAILURES_PER_USER failures for a username, or
LOGIN_MAX_FAILURES_PER_ADDRESS from one address, within LOGIN_FAILURE_WINDOW
seconds, sign-ins for it are refused with 429 for LOGIN_LOCKOUT seconds,
twice as long with each further failure. The counts live in the database,
so every API host and the dashboard share them; a success forgets the
username's count (not the address's). A refused attempt costs no password
check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, delete, select, update

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Conn, Database
from testqueue.models import LoginFailure, as_utc, utcnow
from testqueue.queue import dialect

F = LoginFailure
# Lockouts stop growing here.
MAX_LOCKOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Limits:
    per_user: int
    per_address: int
    window: timedelta
    lockout: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.login_max_failures_per_user,
            settings.login_max_failures_per_address,
            timedelta(seconds=settings.login_failure_window),
            timedelta(seconds=settings.login_lockout),
        )


def _keys(username: str, address: str) -> tuple[str, str]:
    # PostgreSQL text cannot hold NUL, and no username has one.
    name = username.lower()[:150].replace("\0", "\N{REPLACEMENT CHARACTER}")
    return f"user:{name}", f"address:{address[:150]}"


class Lockouts:
    """The lockouts this process has seen. Nothing ends a lockout early, so while one
    lasts a sign-in for its key is refused without a read of the database: a flood
    of refused sign-ins costs the event loop as little as it can."""

    KEPT = 10_000

    def __init__(self) -> None:
        self._until: dict[str, datetime] = {}

    def until(self, keys: tuple[str, ...], now: datetime) -> datetime | None:
        return max((u for k in keys if (u := self._until.get(k)) and u > now), default=None)

    def remember(self, key: str, until: datetime, now: datetime) -> None:
        if len(self._until) >= self.KEPT:
            self._until = {k: u for k, u in self._until.items() if u > now}
        if len(self._until) < self.KEPT:
            self._until[key] = until


_BLOCKED = select(F.key, F.blocked_until).where(
    F.key.in_(bindparam("keys", expanding=True)),
    F.blocked_until > bindparam("now", type_=F.blocked_until.type),
)


async def refuse_if_blocked(db: Database, known: Lockouts, username: str, address: str) -> None:
    """`errors.TooManyRequests`, with the seconds to wait, while either key is locked out."""
    now = utcnow()
    keys = _keys(username, address)
    until = known.until(keys, now)
    if until is None:
        async with db.read() as conn:
            rows = (await conn.execute(_BLOCKED, {"keys": list(keys), "now": now})).all()
        for row in rows:
            known.remember(row.key, as_utc(row.blocked_until), now)
        until = known.until(keys, now)
    if until is not None:
        wait_s = math.ceil((until - now).total_seconds())
        raise errors.TooManyRequests(
            f"too many failed sign-ins: try again in {wait_s} s", retry_after_s=wait_s
        )


def _counting(window_start: datetime) -> tuple[object, object]:
    """The failures and first failure after one more, restarting once the window passed."""
    stale = F.first_at < window_start
    failures = case((stale, 1), else_=F.failures + 1)
    first_at = case((stale, bindparam("now", type_=F.first_at.type)), else_=F.first_at)
    return failures, first_at


async def record_failure(
    db: Database, known: Lockouts, limits: Limits, username: str, address: str
) -> None:
    """Count one failure for the username and for the address; lock out those over their limit."""
    now = utcnow()
    user_key, address_key = _keys(username, address)
    failures, first_at = _counting(now - limits.window)
    upsert = (
        dialect.of(db)
        .upsert(F, [F.key], [], {"failures": failures, "first_at": first_at})
        .returning(F.key, F.failures)
    )
    locked: dict[str, datetime] = {}
    async with db.write() as conn:
        rows = [
            {"key": key, "failures": 1, "first_at": now, "blocked_until": None, "now": now}
            for key in (user_key, address_key)
        ]
        counted = {}
        for row in rows:  # one at a time: RETURNING with executemany is not portable
            result = (await conn.execute(upsert, row)).one()
            counted[result.key] = int(result.failures)
        for key, limit in ((user_key, limits.per_user), (address_key, limits.per_address)):
            over = counted[key] - limit
            if over >= 0:
                until = now + min(limits.lockout * 2**over, MAX_LOCKOUT)
                await _lock_out(conn, key, until)
                locked[key] = until
    for key, until in locked.items():  # once committed
        known.remember(key, until, now)


async def _lock_out(conn: Conn, key: str, until: datetime) -> None:
    await conn.execute(update(F).where(F.key == key).values(blocked_until=until))


async def forget_username(conn: Conn, username: str) -> None:
    """After a good sign-in: the username starts counting afresh."""
    user_key, _ = _keys(username, "")
    await conn.execute(delete(F).where(F.key == user_key))
