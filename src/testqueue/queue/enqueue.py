"""Putting runs in line: one run, or many in one transaction, with their positions.

How a new run's columns are made is described once (`queue.new_run`); both
ways of queueing insert with it. A run may also be answered by its waiting
twin (dedupe), refused whole (backpressure), or given a deadline (queue timeout).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    and_,
    bindparam,
    func,
    or_,
    select,
)

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import Execution, TestCase, utcnow
from testqueue.queue import (
    backpressure,
    dialect,
    expiry,
    moves,
    new_run,
    outbox,
    planner_stats,
    positions,
)
from testqueue.queue.order import PENDING
from testqueue.queue.policy import Policies
from testqueue.queue.positions import position_in
from testqueue.vocabulary import (
    Status,
)

E = Execution


@dataclass(frozen=True)
class RunOptions:
    """What a run request may set; None means the test case's own value."""

    priority: int | None = None
    browser: str | None = None
    environment: str | None = None
    base_url: str | None = None
    triggered_by: str | None = None
    batch_id: int | None = None
    retries: int | None = None
    retry_on: str | None = None  # fenced results, as `vocabulary.encode_tags` writes them
    queue_timeout_s: float | None = None  # 0 = none; None = the test case's, else QUEUE_TIMEOUT
    dedupe: bool | None = None  # None = the test case's


@dataclass(frozen=True)
class Queued:
    id: int
    test_case_id: int
    priority: int
    queue_position: int
    deduplicated: bool = False


async def enqueue(
    db: Database, test_case_ids: Sequence[int], user_id: int | None, options: RunOptions
) -> list[Queued]:
    """Queue one run per id, in the order given, in one transaction."""
    if not test_case_ids:
        raise errors.BadRequest("give at least one test case id")
    if len(test_case_ids) == 1:
        return [await _enqueue_one(db, test_case_ids[0], user_id, options)]
    async with db.write() as conn:
        await backpressure.admit(conn, db.settings, user_id, len(test_case_ids))
        queued = await queue_in(conn, test_case_ids, user_id, options, db=db)
    db.wakeups.wake()
    planner_stats.queued(db, len(queued))
    return queued


async def queue_in(
    conn: Conn,
    test_case_ids: Sequence[int],
    user_id: int | None,
    options: RunOptions,
    priorities: Sequence[int] | None = None,
    *,
    db: Database,
) -> list[Queued]:
    """Queue one run per id in one statement; `priorities`, when given, sets each one's.

    Runs queued together never dedupe: each id given is one run.
    """
    now = utcnow()
    asked = priorities if priorities is not None else [options.priority] * len(test_case_ids)
    on = dialect.of_connection(conn)
    params = {
        **_params(db, user_id, replace(options, dedupe=False), now),
        **on.numbered_params(list(zip(test_case_ids, asked, strict=True))),
    }
    # Ids rise in the order given (the insert takes the rows ORDER BY n).
    inserted = sorted((await conn.execute(new_run.INSERT_MANY[on.name], params)).all(), key=_by_id)
    if len(inserted) != len(test_case_ids):
        missing = sorted(set(test_case_ids) - {row.test_case_id for row in inserted})
        raise errors.NotFound(  # raised inside the transaction: nothing is queued
            f"test case {', '.join(map(str, missing))} does not exist or was deleted"
        )
    # Other hosts hear of it from the database: on PostgreSQL every INSERT
    # into executions sends the NOTIFY (migration 0003).
    await _set_deadlines(conn, db, inserted, now)
    await outbox.record_runs(conn, db, lambda: E.id.in_([r.id for r in inserted]), [outbox.QUEUED])
    positions = await _positions_of_new(conn, db, inserted, now)
    return [
        Queued(r.id, r.test_case_id, r.priority, position)
        for r, position in zip(inserted, positions, strict=True)
    ]


def _by_id(row: Any) -> int:
    return int(row.id)


def _params(
    db: Database, user_id: int | None, options: RunOptions, now: datetime
) -> dict[str, Any]:
    """The parameters of a new run's INSERT that come from the request and the settings."""
    fields = {**asdict(options), "user_id": user_id}
    return {
        **{name: fields[name] for name in new_run.GIVEN},
        "base_url": options.base_url,
        "retries": options.retries,
        "retry_on": options.retry_on,
        "queue_timeout": options.queue_timeout_s,
        "default_queue_timeout": db.settings.queue_timeout,
        "dedupe": options.dedupe,
        "now": now,
    }


_DEADLINE = moves.keep(
    Status.PENDING,
    E.id == bindparam("d_id"),
    expires_at=bindparam("d_at", type_=E.expires_at.type),
)


async def _set_deadlines(conn: Conn, db: Database, inserted: Sequence[Any], now: datetime) -> None:
    """Each new run with a queue timeout expires that long after it was queued."""
    deadlines = [
        {"d_id": r.id, "d_at": now + timedelta(seconds=r.queue_timeout_s)}
        for r in inserted
        if r.queue_timeout_s
    ]
    if not deadlines:
        return
    await conn.execute(_DEADLINE, deadlines)
    await dialect.signal(db, conn, expiry.DEADLINE_SIGNAL)
    db.wakeups.deadline_event.set()


_TWIN_OF_CASE = (
    select(E.id, E.priority, E.queued_at)
    .where(
        PENDING,
        E.test_case_id == bindparam("case_id"),
        E.environment.is_not_distinct_from(bindparam("environment", type_=E.environment.type)),
        E.base_url.is_not_distinct_from(
            select(new_run.base_url()).where(TestCase.id == bindparam("case_id")).scalar_subquery()
        ),
    )
    .order_by(E.queued_at, E.id)
    .limit(1)
)
_CASE_EXISTS = select(TestCase.id).where(
    TestCase.id == bindparam("case_id"), TestCase.archived_at.is_(None)
)


async def _enqueue_one(
    db: Database, test_case_id: int, user_id: int | None, options: RunOptions
) -> Queued:
    """One run: a single INSERT ... SELECT from its test case, then its position.

    On PostgreSQL the insert commits on its own, so the workers' NOTIFY goes
    out before the count; on SQLite both happen under the write lock. A
    queue with a pending limit counts first, in one transaction under a lock.
    """
    now = utcnow()
    params = {
        **_params(db, user_id, options, now),
        "case_id": test_case_id,
        "priority": options.priority,
    }
    limited = backpressure.limited(db.settings)
    # A webhook's delivery is written in the run's own transaction.
    together = limited or await outbox.wants(db, [outbox.QUEUED])
    async with db.write() if together else db.write_one() as conn:
        if limited:
            await backpressure.admit(conn, db.settings, user_id, 1)
        row = (await conn.execute(new_run.INSERT_ONE[conn.dialect.name], params)).one_or_none()
        if row is None:
            return await _twin_or_missing(conn, db, test_case_id, params)
        await _set_deadlines(conn, db, [row], now)
        if together:
            await outbox.record_runs(conn, db, lambda: E.id == row.id, [outbox.QUEUED])
        position = await position_in(conn, db, row.id, row.priority, now)
    db.wakeups.wake()
    planner_stats.queued(db, 1)
    return Queued(row.id, row.test_case_id, row.priority, position)


async def _twin_or_missing(
    conn: Conn, db: Database, test_case_id: int, params: dict[str, Any]
) -> Queued:
    """Nothing was inserted: the pending run this one would repeat, or NotFound."""
    if (await conn.execute(_CASE_EXISTS, params)).first() is None:
        raise errors.NotFound(f"test case {test_case_id} does not exist or was deleted")
    twin = (await conn.execute(_TWIN_OF_CASE, params)).one_or_none()
    if twin is None:  # it started in the meantime: a new one may be queued
        raise errors.InvalidTransition(
            f"the pending run of test case {test_case_id} this one repeats has just started; "
            "send the request again to queue a new one"
        )
    position = await position_in(conn, db, twin.id, twin.priority, twin.queued_at)
    return Queued(twin.id, test_case_id, twin.priority, position, deduplicated=True)


_AHEAD_OF_PRIORITY = select(func.count()).where(
    PENDING,
    or_(
        E.priority < bindparam("p", type_=Integer),
        and_(
            E.priority == bindparam("p", type_=Integer),
            E.queued_at <= bindparam("now", type_=DateTime(True)),
        ),
    ),
)
# An id past every run: a place behind all of one priority queued up to now.
_BEHIND_ALL = 2**63 - 1


async def _ahead_of_new(
    conn: Conn, policies: Policies, shape: positions.Shape, priority: int, now: datetime
) -> int:
    """Pending runs (new ones too) at or ahead of a run of `priority` queued `now`, last."""
    if shape.aged(policies, now):
        return await positions.aged_count(conn, policies, priority, now, _BEHIND_ALL, now)
    return int((await conn.execute(_AHEAD_OF_PRIORITY, {"p": priority, "now": now})).scalar_one())


async def _positions_of_new(
    conn: Conn, db: Database, inserted: Sequence[Any], now: datetime
) -> list[int]:
    """Positions of rows just queued together.

    Where the policies may reorder the line, one replay places them all.
    Otherwise they share `queued_at` (the newest in the line) and ids rise in
    the order given, so one of them stands ahead of another when its priority
    is higher, or equal and it came first; every other pending run that
    stands ahead of a new run of priority p (by effective priority) stands
    ahead of them all: one count per priority among them.
    """
    policies = Policies.of(db.settings)
    shape = await positions.read_shape(conn)
    replayed: dict[int, int] = {}
    if shape.reorders(policies):
        seen = await positions.replay(conn, db)
        replayed = {run.id: place + 1 for place, (run, _) in enumerate(seen.starts)}
    per_priority = Counter(row.priority for row in inserted)
    ours: dict[int, int] = {}  # priority -> rows of this batch at it or higher
    higher: dict[int, int] = {}  # priority -> rows of this batch higher than it
    total = 0
    for priority in sorted(per_priority):
        higher[priority] = total
        total += per_priority[priority]
        ours[priority] = total
    others = {p: await _ahead_of_new(conn, policies, shape, p, now) - ours[p] for p in per_priority}
    seen_of: Counter[int] = Counter()
    found = []
    for row in inserted:
        counted = others[row.priority] + higher[row.priority] + seen_of[row.priority] + 1
        found.append(replayed.get(row.id, counted))
        seen_of[row.priority] += 1
    return found
