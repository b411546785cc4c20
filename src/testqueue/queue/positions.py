"""Positions in the line, counted when read, never stored (invariant 7).

Where the policies cannot change the order (no pending run has a concurrency
key, and one user waits or fair share and caps are off), a position is a
count over the line's index: the runs of each priority whose effective
priority is higher, or equal and queued earlier. Otherwise the line is
replayed (`forecast`), as the claim would take it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, and_, bindparam, func, literal, select

from testqueue.database import Conn, Database
from testqueue.models import Execution, as_utc, utcnow
from testqueue.queue import dialect, forecast, line
from testqueue.queue.order import PENDING, SHAPE
from testqueue.queue.policy import Policies
from testqueue.vocabulary import HIGHEST_PRIORITY, LOWEST_PRIORITY

E = Execution
# A replayed position is exact up to this far back in the line; past it, it is the count.
MAX_REPLAYED = 2_000
_EVER = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """What decides how a position is found: more than one user waiting, keys, the oldest
    wait."""

    many_users: bool
    keyed: bool
    oldest: datetime | None

    def reorders(self, policies: Policies) -> bool:
        """Whether the policies may start runs out of effective-priority order."""
        return self.keyed or (policies.reorders_users and self.many_users)

    def aged(self, policies: Policies, now: datetime) -> bool:
        """Whether any waiting run has aged (so counts go by effective priority)."""
        if policies.aging_s <= 0 or self.oldest is None:
            return False
        return self.oldest <= now - timedelta(seconds=policies.aging_s)

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> Shape:
        """From the `order.SHAPE` columns of a row."""
        many_users, keyed, oldest = row
        return cls(bool(many_users), bool(keyed), line.stamp(oldest))


_SHAPE = select(*SHAPE)


async def read_shape(conn: Conn) -> Shape:
    return Shape.of(tuple((await conn.execute(_SHAPE)).one()))


async def position_in(
    conn: Conn,
    db: Database,
    execution_id: int,
    priority: int,
    queued_at: datetime,
) -> int:
    """1 = next to start, for a pending execution."""
    position, _ = await place(conn, db, execution_id, priority, queued_at)
    return position


async def place(
    conn: Conn,
    db: Database,
    execution_id: int,
    priority: int,
    queued_at: datetime,
) -> tuple[int, forecast.Outlook | None]:
    """The position, and the replay it came from when the policies reorder the line.

    One statement in the common case: the count by priority and `queued_at`
    carries the line's shape, which says whether that count is the answer.
    """
    policies = Policies.of(db.settings)
    queued_at = as_utc(queued_at)
    on = dialect.of_connection(conn)
    ahead, row = await on.count_ahead(conn, priority, queued_at, execution_id)
    shape = Shape.of(row)
    if shape.reorders(policies):
        seen = await replay(conn, db, until=execution_id)
        position = seen.position(execution_id)
        if position is not None:
            return position, seen
    now = utcnow()
    if shape.aged(policies, now):
        return await aged_count(conn, policies, priority, queued_at, execution_id, now) + 1, None
    return ahead + 1, None


async def replay(conn: Conn, db: Database, until: int | None = None) -> forecast.Outlook:
    """The line replayed as far as positions are replayed (MAX_REPLAYED)."""
    settings = db.settings
    return await forecast.outlook(
        conn,
        Policies.of(settings),
        settings.max_concurrent_executions,
        settings.execution_timeout,
        MAX_REPLAYED,
        until=until,
    )


async def count_ahead(
    conn: Conn, policies: Policies, shape: Shape, priority: int, queued_at: datetime, run_id: int
) -> int:
    """Pending runs ahead of (priority, queued_at, run_id) by effective priority, counted."""
    now = utcnow()
    if not shape.aged(policies, now):
        ahead, _ = await dialect.of_connection(conn).count_ahead(conn, priority, queued_at, run_id)
        return ahead
    return await aged_count(conn, policies, priority, queued_at, run_id, now)


async def position_of(conn: Conn, db: Database, execution_id: int) -> int | None:
    """1 = next to start; None when the execution is not pending."""
    row = (
        await conn.execute(select(E.priority, E.queued_at).where(E.id == execution_id, PENDING))
    ).one_or_none()
    if row is None:
        return None
    return await position_in(conn, db, execution_id, row.priority, row.queued_at)


async def aged_count(
    conn: Conn, policies: Policies, priority: int, queued_at: datetime, run_id: int, now: datetime
) -> int:
    """Pending runs ahead of this one by effective priority, `queued_at`, id.

    A run of priority p has aged to level e or higher exactly when it was
    queued at or before now - (p - e) * AGING_SECONDS, so each priority's
    share is one or two range counts over the line's index.
    """
    mine = policies.effective(priority, queued_at, now)
    step = timedelta(seconds=policies.aging_s)
    shape: list[tuple[int, str]] = []
    params: dict[str, Any] = {"q0": queued_at, "id0": run_id}
    for p in range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1):
        if p == priority:
            shape.append((p, "before"))  # one priority keeps queued_at order
            continue
        # Queued at or before `better` -> level above ours; at or before `level` -> ours or above.
        better = _EVER if p < mine else (now - step * (p - mine + 1) if mine > 1 else None)
        level = _EVER if p <= mine else now - step * (p - mine)
        if level < queued_at:
            shape.append((p, "le"))
            params[f"t{p}"] = level
        elif better is not None and better >= queued_at:
            shape.append((p, "le"))
            params[f"t{p}"] = better
        else:
            shape.append((p, "before"))
    return int((await conn.execute(_aged_statement(tuple(shape)), params)).scalar_one())


@functools.cache
def _aged_statement(shape: tuple[tuple[int, str], ...]) -> Any:
    q0 = bindparam("q0", type_=DateTime(True))
    id0 = bindparam("id0", type_=Integer)
    total: Any = literal(0)
    for p, mode in shape:
        here = (PENDING, E.priority == p)
        if mode == "le":
            parts = [E.queued_at <= bindparam(f"t{p}", type_=DateTime(True))]
        else:
            parts = [E.queued_at < q0, and_(E.queued_at == q0, E.id < id0)]
        for part in parts:
            total = total + select(func.count()).where(*here, part).scalar_subquery()
    return select(total)
