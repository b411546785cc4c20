"""Putting runs in line: one run, or many in one transaction, with their positions.

A new run is described once here (`NEW_RUN`, the fields a request gives,
and the SQL that takes priority and base URL from its test case), and both
ways of queueing build from that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
)

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import Execution, TestCase, utcnow
from testqueue.queue import dialect
from testqueue.queue.order import PENDING
from testqueue.queue.positions import count_ahead
from testqueue.vocabulary import DEFAULT_PRIORITY, PRIORITY_WORDS, Status

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


@dataclass(frozen=True)
class Queued:
    id: int
    test_case_id: int
    priority: int
    queue_position: int


# Every new run starts so; the rest comes from the request and its test case.
NEW_RUN: dict[str, Any] = {
    "status": Status.PENDING.value,
    "attempt": 1,
    "cancel_requested": False,
    "total_steps": 0,
    "passed_steps": 0,
    "failed_steps": 0,
    "skipped_steps": 0,
    "retried": 0,
    "flaky": False,
}
# Taken from the request as given.
GIVEN = ("user_id", "browser", "environment", "triggered_by", "batch_id")


def _run_priority(asked: Any) -> Any:
    """A new run's priority: the one asked for, else its test case's."""
    return func.coalesce(
        asked, case(PRIORITY_WORDS, value=TestCase.priority, else_=DEFAULT_PRIORITY)
    )


def _run_values(asked_priority: Any) -> dict[Any, Any]:
    """Every column of a new run, as SQL over its row of test_cases and the request's params.

    The base URL is the one asked for, else the test case's `test_data.base_url`;
    retries and the results they follow are the request's, else the test case's.
    """
    columns = E.__table__.c
    values: dict[Any, Any] = {
        columns[name]: literal(value, columns[name].type) for name, value in NEW_RUN.items()
    }
    values.update({columns[name]: bindparam(name, type_=columns[name].type) for name in GIVEN})
    values.update(
        {
            E.test_case_id: TestCase.id,
            E.priority: _run_priority(asked_priority),
            E.queued_at: bindparam("now", type_=E.queued_at.type),
            E.required_tags: TestCase.required_tags,
            E.base_url: func.coalesce(
                bindparam("base_url", type_=E.base_url.type),
                TestCase.test_data["base_url"].as_string(),
            ),
            E.retries: func.coalesce(bindparam("retries", type_=Integer), TestCase.retries),
            E.retry_on: func.coalesce(
                bindparam("retry_on", type_=E.retry_on.type), TestCase.retry_on
            ),
        }
    )
    return values


def _insert(values: dict[Any, Any], source: Any) -> Any:
    return (
        insert(E)
        .from_select([column.key for column in values], source)
        .returning(E.id, E.test_case_id, E.priority)
    )


def _one_run_insert() -> Any:
    """INSERT INTO executions SELECT <a new run> FROM test_cases WHERE id = :case_id."""
    values = _run_values(bindparam("priority", type_=Integer))
    source = select(*values.values()).where(
        TestCase.id == bindparam("case_id"), TestCase.archived_at.is_(None)
    )
    return _insert(values, source)


def _many_runs_insert(listed: Any) -> Any:
    """INSERT INTO executions SELECT <a new run> FROM <the list> JOIN test_cases ORDER BY n.

    One statement whatever the number of runs: the list goes to the database
    as one parameter (`Dialect.numbered`), not as a thousand rows of them.
    """
    values = _run_values(listed.c.priority)
    source = (
        select(*values.values())
        .select_from(listed.join(TestCase, TestCase.id == listed.c.case_id))
        .where(TestCase.archived_at.is_(None))
        .order_by(listed.c.n)
    )
    return _insert(values, source)


_INSERT_ONE = _one_run_insert()
_INSERT_MANY = {d.name: _many_runs_insert(d.numbered()) for d in (dialect.SQLITE, dialect.POSTGRES)}


async def enqueue(
    db: Database, test_case_ids: Sequence[int], user_id: int | None, options: RunOptions
) -> list[Queued]:
    """Queue one run per id, in the order given, in one transaction."""
    if not test_case_ids:
        raise errors.BadRequest("give at least one test case id")
    if len(test_case_ids) == 1:
        return [await _enqueue_one(db, test_case_ids[0], user_id, options)]
    async with db.write() as conn:
        queued = await queue_in(conn, test_case_ids, user_id, options)
    db.wakeups.wake()
    return queued


async def queue_in(
    conn: Conn,
    test_case_ids: Sequence[int],
    user_id: int | None,
    options: RunOptions,
    priorities: Sequence[int] | None = None,
) -> list[Queued]:
    """Queue one run per id in one statement; `priorities`, when given, sets each one's."""
    now = utcnow()
    asked = priorities if priorities is not None else [options.priority] * len(test_case_ids)
    on = dialect.of_connection(conn)
    params = {
        **_given(user_id, options),
        **on.numbered_params(list(zip(test_case_ids, asked, strict=True))),
        "base_url": options.base_url,
        "retries": options.retries,
        "retry_on": options.retry_on,
        "now": now,
    }
    # Ids rise in the order given (the insert takes the rows ORDER BY n).
    inserted = sorted((await conn.execute(_INSERT_MANY[on.name], params)).all(), key=_by_id)
    if len(inserted) != len(test_case_ids):
        missing = sorted(set(test_case_ids) - {row.test_case_id for row in inserted})
        raise errors.NotFound(  # raised inside the transaction: nothing is queued
            f"test case {', '.join(map(str, missing))} does not exist or was deleted"
        )
    # Other hosts hear of it from the database: on PostgreSQL every INSERT
    # into executions sends the NOTIFY (migration 0003).
    positions = await _positions_of_new(conn, inserted, now)
    return [
        Queued(r.id, r.test_case_id, r.priority, position)
        for r, position in zip(inserted, positions, strict=True)
    ]


def _by_id(row: Any) -> int:
    return int(row.id)


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


def _given(user_id: int | None, options: RunOptions) -> dict[str, Any]:
    fields = {**asdict(options), "user_id": user_id}
    return {name: fields[name] for name in GIVEN}


async def _enqueue_one(
    db: Database, test_case_id: int, user_id: int | None, options: RunOptions
) -> Queued:
    """One run: a single INSERT ... SELECT from its test case, then the count of runs ahead.

    On PostgreSQL the insert commits on its own, so the workers' NOTIFY goes
    out before the count; on SQLite both happen under the write lock.
    """
    now = utcnow()
    params = {
        **_given(user_id, options),
        "case_id": test_case_id,
        "priority": options.priority,
        "base_url": options.base_url,
        "retries": options.retries,
        "retry_on": options.retry_on,
        "now": now,
    }
    async with db.write_one() as conn:
        row = (await conn.execute(_INSERT_ONE, params)).one_or_none()
        if row is None:
            raise errors.NotFound(f"test case {test_case_id} does not exist or was deleted")
        ahead = await count_ahead(conn, row.priority, now, row.id)
    db.wakeups.wake()
    return Queued(row.id, row.test_case_id, row.priority, ahead + 1)


async def _positions_of_new(conn: Conn, inserted: Sequence[Any], now: datetime) -> list[int]:
    """Positions of rows just queued together, counted once for each priority among them.

    They share `queued_at` (the newest in the line) and ids rise in the order
    given, so one of them stands ahead of another when its priority is higher,
    or equal and it came first; every other pending run of higher priority, or
    of equal priority queued at that instant or before, is ahead of them all.
    """
    per_priority = Counter(row.priority for row in inserted)
    ours: dict[int, int] = {}  # priority -> rows of this batch at it or higher
    higher: dict[int, int] = {}  # priority -> rows of this batch higher than it
    total = 0
    for priority in sorted(per_priority):
        higher[priority] = total
        total += per_priority[priority]
        ours[priority] = total
    others = {
        p: int((await conn.execute(_AHEAD_OF_PRIORITY, {"p": p, "now": now})).scalar_one())
        - ours[p]
        for p in per_priority
    }
    seen: Counter[int] = Counter()
    positions = []
    for row in inserted:
        positions.append(others[row.priority] + higher[row.priority] + seen[row.priority] + 1)
        seen[row.priority] += 1
    return positions
