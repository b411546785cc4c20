"""Putting runs in line: one run, or many in one transaction, with their positions.

A new run is described once here (`NEW_RUN`, the fields a request gives,
and the SQL that takes priority and base URL from its test case), and both
ways of queueing build from that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
)

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import Execution, TestCase, utcnow
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


def _run_priority() -> Any:
    """A new run's priority: the one asked for, else its test case's."""
    return func.coalesce(
        bindparam("priority", type_=Integer),
        case(PRIORITY_WORDS, value=TestCase.priority, else_=DEFAULT_PRIORITY),
    )


def _run_base_url() -> Any:
    """A new run's base URL: the one asked for, else its test case's `test_data.base_url`."""
    return func.coalesce(
        bindparam("base_url", type_=E.base_url.type), TestCase.test_data["base_url"].as_string()
    )


def _run_retries() -> tuple[Any, Any]:
    """A new run's retries and the results they follow: the request's, else its test case's."""
    return (
        func.coalesce(bindparam("retries", type_=Integer), TestCase.retries),
        func.coalesce(bindparam("retry_on", type_=E.retry_on.type), TestCase.retry_on),
    )


def _one_run_insert() -> Any:
    """INSERT INTO executions SELECT <a new run> FROM test_cases WHERE id = :case_id."""
    columns = E.__table__.c
    values: dict[Any, Any] = {
        columns[name]: literal(value, columns[name].type) for name, value in NEW_RUN.items()
    }
    values.update({columns[name]: bindparam(name, type_=columns[name].type) for name in GIVEN})
    values.update(
        {
            E.test_case_id: TestCase.id,
            E.priority: _run_priority(),
            E.queued_at: bindparam("now", type_=E.queued_at.type),
            E.required_tags: TestCase.required_tags,
            E.base_url: _run_base_url(),
            E.retries: _run_retries()[0],
            E.retry_on: _run_retries()[1],
        }
    )
    source = select(*values.values()).where(
        TestCase.id == bindparam("case_id"), TestCase.archived_at.is_(None)
    )
    return (
        insert(E)
        .from_select([column.key for column in values], source)
        .returning(E.id, E.test_case_id, E.priority)
    )


def _cases_statement() -> Any:
    """The test cases to run, with what each new run takes from its own."""
    priority = _run_priority()
    retries, retry_on = _run_retries()
    return select(
        TestCase.id,
        TestCase.required_tags,
        priority.label("run_priority"),
        _run_base_url().label("run_base_url"),
        retries.label("run_retries"),
        retry_on.label("run_retry_on"),
    ).where(TestCase.id.in_(bindparam("ids", expanding=True)), TestCase.archived_at.is_(None))


_CASES = _cases_statement()


def _constant(value: Any) -> Any:
    """A value of NEW_RUN written into the statement itself, not sent with every row."""
    if isinstance(value, bool):
        return true() if value else false()
    if isinstance(value, int):
        return literal_column(str(value))
    return literal_column(f"'{value}'")


# Many rows: the constants are in the statement, so each row sends only what varies
# (PostgreSQL's driver reads every placeholder of a thousand-row INSERT).
_INSERT = (
    insert(E)
    .values({E.__table__.c[name]: _constant(value) for name, value in NEW_RUN.items()})
    .returning(E.id, E.test_case_id, E.priority, sort_by_parameter_order=True)
)
_INSERT_ONE = _one_run_insert()


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
    now = utcnow()
    cases = await _load_cases(conn, set(test_case_ids), options, now)
    given = _given(user_id, options)
    rows = [_new_row(cases[case_id], given, now) for case_id in test_case_ids]
    if priorities is not None:
        for row, priority in zip(rows, priorities, strict=True):
            row["priority"] = priority
    # Counted before the insert, once for each priority among the new runs:
    # a new run's `queued_at` is the newest, so every pending run of higher
    # priority, or of equal priority queued at that instant or before, is ahead.
    of_priority = await _ahead_of_priorities(conn, {row["priority"] for row in rows}, now)

    def ahead(row: Any) -> int:
        return of_priority[row.priority]

    inserted = (await conn.execute(_INSERT, rows)).all()
    # Other hosts hear of it from the database: on PostgreSQL every INSERT
    # into executions sends the NOTIFY (migration 0003).
    positions = _positions_of_new(inserted, ahead)
    return [
        Queued(r.id, r.test_case_id, r.priority, position)
        for r, position in zip(inserted, positions, strict=True)
    ]


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


async def _ahead_of_priorities(conn: Conn, priorities: set[int], now: datetime) -> dict[int, int]:
    """For runs queued now at each of these priorities, how many pending runs are ahead."""
    ahead = {}
    for p in priorities:
        ahead[p] = int((await conn.execute(_AHEAD_OF_PRIORITY, {"p": p, "now": now})).scalar_one())
    return ahead


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


def _positions_of_new(inserted: Sequence[Any], ahead: Callable[[Any], int]) -> list[int]:
    """Positions of rows just queued together, from the runs that were pending before them.

    They share `queued_at` (the newest in the line) and ids rise in the order
    given, so one of them stands ahead of another when its priority is higher,
    or equal and it came first.
    """
    per_priority = Counter(row.priority for row in inserted)
    higher: dict[int, int] = {}  # priority -> rows of this batch with a higher one
    total = 0
    for priority in sorted(per_priority):
        higher[priority] = total
        total += per_priority[priority]
    seen: Counter[int] = Counter()
    positions = []
    for row in inserted:
        positions.append(ahead(row) + higher[row.priority] + seen[row.priority] + 1)
        seen[row.priority] += 1
    return positions


async def _load_cases(
    conn: Conn, ids: set[int], options: RunOptions, now: datetime
) -> dict[int, Any]:
    params = {
        "ids": list(ids),
        "priority": options.priority,
        "base_url": options.base_url,
        "retries": options.retries,
        "retry_on": options.retry_on,
        "now": now,
    }
    found = {row.id: row for row in (await conn.execute(_CASES, params)).all()}
    missing = sorted(ids - found.keys())
    if missing:
        raise errors.NotFound(
            f"test case {', '.join(map(str, missing))} does not exist or was deleted"
        )
    return found


def _new_row(case_row: Any, given: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        **given,
        "test_case_id": case_row.id,
        "priority": case_row.run_priority,
        "queued_at": now,
        "required_tags": case_row.required_tags,
        "base_url": case_row.run_base_url,
        "retries": case_row.run_retries,
        "retry_on": case_row.run_retry_on,
    }
