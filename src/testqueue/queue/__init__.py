"""The only code that changes an execution's lifecycle.

Every move is one `UPDATE ... WHERE id = :id AND status = :expected` (or a set
of them in one transaction); a move that finds the row elsewhere raises
`errors.InvalidTransition`. The order of the line is `priority, queued_at, id`
and positions are counted from it when read, never stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import (
    PRIORITY_WORDS,
    TRANSITIONS,
    Execution,
    QueueState,
    Status,
    TestCase,
    utcnow,
)
from testqueue.queue import dialect
from testqueue.queue.claims import (
    Beat,
    Claimed,
    Claimer,
    Finished,
    Progress,
    dead_workers,
    expire_workers,
    heartbeat,
    register_worker,
    release,
    settle,
)
from testqueue.queue.positions import (
    PENDING,
    count_ahead,
    encode_tags,
    position_of,
)

__all__ = [
    "Beat",
    "Claimed",
    "Claimer",
    "Finished",
    "Progress",
    "RunOptions",
    "cancel",
    "clear",
    "dead_workers",
    "declare_slots",
    "delete_test_case",
    "encode_tags",
    "enqueue",
    "expire_workers",
    "heartbeat",
    "parse_priority",
    "position_of",
    "register_worker",
    "release",
    "set_max_concurrent",
    "set_paused",
    "set_priority",
    "settle",
]

E = Execution


def parse_priority(value: int | str) -> int:
    """1..10 (1 = highest), or the words high, medium, low."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word]
        if not word.lstrip("-").isdigit():
            raise errors.BadRequest(f"priority {value!r} is not 1..10 or one of high, medium, low")
        value = int(word)
    if isinstance(value, bool) or not 1 <= value <= 10:
        raise errors.BadRequest(f"priority {value!r} is out of range: use 1 (highest) to 10")
    return value


@dataclass(frozen=True)
class RunOptions:
    """What a run request may set; None means the test case's own value."""

    priority: int | None = None
    browser: str | None = None
    environment: str | None = None
    base_url: str | None = None
    triggered_by: str | None = None


@dataclass(frozen=True)
class Queued:
    id: int
    test_case_id: int
    priority: int
    queue_position: int


async def enqueue(
    db: Database, test_case_ids: Sequence[int], user_id: int | None, options: RunOptions
) -> list[Queued]:
    """Queue one run per id, in the order given, in one transaction."""
    if not test_case_ids:
        raise errors.BadRequest("give at least one test case id")
    if len(test_case_ids) == 1:
        return [await _enqueue_one(db, test_case_ids[0], user_id, options)]
    async with db.write() as conn:
        now = utcnow()
        cases = await _load_cases(conn, set(test_case_ids), options, now)
        rows = [_pending_row(cases[tc_id], user_id, options, now) for tc_id in test_case_ids]
        inserted = (await conn.execute(_INSERT, rows)).all()
        # Other hosts hear of it from the database: on PostgreSQL every INSERT
        # into executions sends the NOTIFY (migration 0003).
    db.wake()
    positions = _positions_of_new(inserted, {tc_id: case.ahead for tc_id, case in cases.items()})
    return [
        Queued(r.id, r.test_case_id, r.priority, position)
        for r, position in zip(inserted, positions, strict=True)
    ]


async def _enqueue_one(
    db: Database, test_case_id: int, user_id: int | None, options: RunOptions
) -> Queued:
    """One run: a single INSERT ... SELECT from its test case, then the count of runs ahead.

    On PostgreSQL the insert commits on its own, so the workers' NOTIFY goes
    out before the count; on SQLite both happen under the write lock.
    """
    now = utcnow()
    params = {
        "case_id": test_case_id,
        "user_id": user_id,
        "priority": options.priority,
        "now": now,
        "browser": options.browser,
        "environment": options.environment,
        "base_url": options.base_url,
        "triggered_by": options.triggered_by,
    }
    async with db.write_one() as conn:
        row = (await conn.execute(_INSERT_ONE, params)).one_or_none()
        if row is None:
            raise errors.NotFound(f"test case {test_case_id} does not exist")
        ahead = await count_ahead(conn, row.priority, now, row.id)
    db.wake()
    return Queued(row.id, row.test_case_id, row.priority, ahead + 1)


def _positions_of_new(inserted: Sequence[Any], ahead_of_case: dict[int, int]) -> list[int]:
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
        positions.append(
            ahead_of_case[row.test_case_id] + higher[row.priority] + seen[row.priority] + 1
        )
        seen[row.priority] += 1
    return positions


def _run_priority() -> Any:
    """A new run's priority: the one asked for, else its test case's."""
    return func.coalesce(
        bindparam("priority", type_=Integer),
        case(PRIORITY_WORDS, value=TestCase.priority, else_=PRIORITY_WORDS["medium"]),
    )


def _run_base_url() -> Any:
    """A new run's base URL: the one asked for, else its test case's `test_data.base_url`."""
    return func.coalesce(
        bindparam("base_url", type_=E.base_url.type), TestCase.test_data["base_url"].as_string()
    )


def _one_run_insert() -> Any:
    def given(name: str, column: Any) -> Any:
        return bindparam(name, type_=column.type)

    def fixed(value: Any, column: Any) -> Any:
        return literal(value, column.type)

    values = {
        E.test_case_id: TestCase.id,
        E.user_id: given("user_id", E.user_id),
        E.status: fixed(Status.PENDING.value, E.status),
        E.priority: _run_priority(),
        E.queued_at: given("now", E.queued_at),
        E.attempt: fixed(1, E.attempt),
        E.cancel_requested: fixed(False, E.cancel_requested),
        E.required_tags: TestCase.required_tags,
        E.browser: given("browser", E.browser),
        E.environment: given("environment", E.environment),
        E.base_url: _run_base_url(),
        E.triggered_by: given("triggered_by", E.triggered_by),
        E.total_steps: fixed(0, E.total_steps),
        E.passed_steps: fixed(0, E.passed_steps),
        E.failed_steps: fixed(0, E.failed_steps),
        E.skipped_steps: fixed(0, E.skipped_steps),
    }
    source = select(*values.values()).where(TestCase.id == bindparam("case_id"))
    return (
        insert(E)
        .from_select([column.key for column in values], source)
        .returning(E.id, E.test_case_id, E.priority)
    )


def _cases_statement() -> Any:
    """The test cases to run, each with how many pending runs its new run will stand behind.

    Counted here, before the insert, so the enqueue is one statement shorter:
    a new run's `queued_at` is the newest, so every pending run of higher
    priority, or of equal priority queued at that instant or before, is ahead.
    """
    priority = _run_priority()
    queued_at = bindparam("now", type_=DateTime(True))
    higher = select(func.count()).where(PENDING, E.priority < priority)
    equal = select(func.count()).where(PENDING, E.priority == priority, E.queued_at <= queued_at)
    return select(
        TestCase.id,
        TestCase.required_tags,
        priority.label("run_priority"),
        _run_base_url().label("run_base_url"),
        (higher.scalar_subquery() + equal.scalar_subquery()).label("ahead"),
    ).where(TestCase.id.in_(bindparam("ids", expanding=True)))


_CASES = _cases_statement()
_INSERT = insert(E).returning(E.id, E.test_case_id, E.priority, sort_by_parameter_order=True)
_INSERT_ONE = _one_run_insert()


async def _load_cases(
    conn: Conn, ids: set[int], options: RunOptions, now: datetime
) -> dict[int, Any]:
    params = {
        "ids": list(ids),
        "priority": options.priority,
        "base_url": options.base_url,
        "now": now,
    }
    found = {row.id: row for row in (await conn.execute(_CASES, params)).all()}
    missing = sorted(ids - found.keys())
    if missing:
        raise errors.NotFound(f"test case {', '.join(map(str, missing))} does not exist")
    return found


def _pending_row(
    case_row: Any, user_id: int | None, options: RunOptions, now: datetime
) -> dict[str, Any]:
    return {
        "test_case_id": case_row.id,
        "user_id": user_id,
        "status": Status.PENDING,
        "priority": case_row.run_priority,
        "queued_at": now,
        "attempt": 1,
        "cancel_requested": False,
        "required_tags": case_row.required_tags,
        "browser": options.browser,
        "environment": options.environment,
        "base_url": case_row.run_base_url,
        "triggered_by": options.triggered_by,
        "total_steps": 0,
        "passed_steps": 0,
        "failed_steps": 0,
        "skipped_steps": 0,
    }


async def _owned(conn: Conn, execution_id: int, owner_id: int | None) -> Any:
    """The row's status and owner; NotFound or Forbidden before any write."""
    row = (
        await conn.execute(
            select(E.status, E.user_id, E.cancel_requested).where(E.id == execution_id)
        )
    ).one_or_none()
    if row is None:
        raise errors.NotFound(f"execution {execution_id} does not exist")
    if owner_id is not None and row.user_id != owner_id:
        raise errors.Forbidden(f"execution {execution_id} belongs to another user")
    return row


async def cancel(db: Database, execution_id: int, owner_id: int | None = None) -> str:
    """Cancel a pending execution now, or ask the worker of a running one to stop it.

    Returns the status the row has after the call. A running execution stays
    `running` until its worker has stopped the process: only then is its slot free.
    """
    async with db.write() as conn:
        row = await _owned(conn, execution_id, owner_id)
        if row.status == Status.PENDING:
            await _move(
                conn,
                execution_id,
                Status.PENDING,
                status=Status.CANCELLED,
                completed_at=utcnow(),
                error_message="cancelled while pending",
            )
            outcome = Status.CANCELLED
        elif row.status == Status.RUNNING:
            await _move(conn, execution_id, Status.RUNNING, cancel_requested=True)
            outcome = Status.RUNNING
        else:
            raise errors.InvalidTransition(
                f"execution {execution_id} is already {row.status}; "
                "only pending or running ones can be cancelled"
            )
        await dialect.signal(db, conn, f"cancel:{execution_id}")
    db.request_cancel(execution_id)
    return outcome


async def set_priority(
    db: Database, execution_id: int, priority: int, owner_id: int | None = None
) -> int:
    """Move a pending execution in the line; returns its new position."""
    async with db.write() as conn:
        row = await _owned(conn, execution_id, owner_id)
        if row.status != Status.PENDING:
            raise errors.InvalidTransition(
                f"execution {execution_id} is {row.status}; only a pending one can change priority"
            )
        await _move(conn, execution_id, Status.PENDING, priority=priority)
        queued_at = (
            await conn.execute(select(E.queued_at).where(E.id == execution_id))
        ).scalar_one()
        position = await count_ahead(conn, priority, queued_at, execution_id) + 1
        await dialect.signal(db, conn)
    db.wake()
    return position


async def _move(conn: Conn, execution_id: int, expected: Status, **values: Any) -> None:
    target = values.get("status", expected)
    if target != expected and target not in TRANSITIONS[expected]:
        raise errors.InvalidTransition(f"an execution cannot move from {expected} to {target}")
    result = await conn.execute(
        update(E).where(E.id == execution_id, E.status == expected).values(**values)
    )
    if result.rowcount == 0:
        raise errors.InvalidTransition(
            f"execution {execution_id} is no longer {expected}; read it again"
        )


async def clear(db: Database) -> int:
    """Cancel every pending execution in one statement; running ones go on."""
    async with db.write() as conn:
        result = await conn.execute(
            update(E)
            .where(PENDING)
            .values(
                status=Status.CANCELLED,
                completed_at=utcnow(),
                error_message="removed when the queue was cleared",
            )
        )
        await dialect.signal(db, conn)
    return int(result.rowcount)


async def _change_state(db: Database, **values: Any) -> None:
    """Change the queue's switches for every worker, and wake them to look again."""
    async with db.write() as conn:
        await conn.execute(
            update(QueueState).where(QueueState.id == 1).values(**values, updated_at=utcnow())
        )
        await dialect.signal(db, conn)
    db.wake()


async def set_paused(db: Database, paused: bool) -> None:
    """Pause (nothing new starts) or resume the queue for every worker."""
    await _change_state(db, paused=paused)


async def declare_slots(db: Database, slots: int) -> int | None:
    """A starting worker's MAX_CONCURRENT_EXECUTIONS becomes every process's slots.

    The latest worker to start sets the number, so the global limit is one
    number even when hosts were started with different ones (an admin's
    runtime number still wins). Returns the different number it replaced.
    """
    async with db.read() as conn:
        before = (
            await conn.execute(select(QueueState.configured_slots).where(QueueState.id == 1))
        ).scalar_one_or_none()
    if before == slots:
        return None
    await _change_state(db, configured_slots=slots)
    return before


async def set_max_concurrent(db: Database, slots: int | None) -> None:
    """Change the global number of slots at runtime; None returns to what workers started with."""
    await _change_state(db, max_concurrent=slots)


async def delete_test_case(db: Database, test_case_id: int) -> int:
    """Delete a test case and cancel its pending runs, in one transaction.

    Finished runs keep their history (their `test_case_id` becomes null);
    running ones go on with the spec they were claimed with. Returns how many
    pending runs were cancelled.
    """
    async with db.write() as conn:
        cancelled = await conn.execute(
            update(E)
            .where(E.test_case_id == test_case_id, PENDING)
            .values(
                status=Status.CANCELLED,
                completed_at=utcnow(),
                error_message="its test case was deleted",
            )
        )
        deleted = await conn.execute(delete(TestCase).where(TestCase.id == test_case_id))
        if deleted.rowcount == 0:
            raise errors.NotFound(f"test case {test_case_id} does not exist")
    return int(cancelled.rowcount)
