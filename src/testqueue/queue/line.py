"""Reading the line for `queue.policy`: the head of each (priority, user) list, what runs,
and the slots, in one statement.

The pairs are found by a skip scan of `ix_executions_fair` (one index probe per
priority and per user), and each pair gives its first `k` runs by a range of
the same index, so the read costs the number of users waiting, not the
length of the line. A list that filled its `k` may go on (`truncated`); the
plan asks for more only when it reaches the end of one (`policy.NeedMore`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import TextClause, text

from testqueue.database import Conn
from testqueue.models import as_utc
from testqueue.queue.order import PAIRS
from testqueue.queue.policy import Holding, Waiting

_FIRST_K = """SELECT y.id FROM executions AS y
  WHERE y.status = 'pending' AND y.priority = pairs.priority AND y.user_id = pairs.user_id
  ORDER BY y.queued_at, y.id LIMIT :k"""
# A list per pair: SQLite has no LATERAL, but runs a correlated IN list once per pair.
_JOIN = {
    "sqlite": f"JOIN executions AS e ON e.id IN ({_FIRST_K})",
    "postgresql": f"CROSS JOIN LATERAL ({_FIRST_K.replace('SELECT y.id', 'SELECT y.*')}) AS e",
}
_COLUMNS = (
    "id, priority, queued_at, user_id, concurrency_key, concurrency_limit, test_case_id, "
    "required_tags, expires_at"
)


def _line_statement(dialect_name: str) -> TextClause:
    """Pending runs (kind 1), running runs (kind 2) and the slots and pause switch (kind 3)."""
    pending = ", ".join(f"e.{c}" for c in _COLUMNS.split(", "))
    running = _COLUMNS.replace("queued_at", "started_at").replace("expires_at", "NULL")
    return text(f"""{PAIRS}
SELECT 1 AS kind, {pending} FROM pairs {_JOIN[dialect_name]} WHERE pairs.user_id IS NOT NULL
UNION ALL
SELECT 2, {running} FROM executions WHERE status = 'running'
UNION ALL
SELECT 3, coalesce(q.max_concurrent, q.configured_slots, :default_slots),
  CASE WHEN q.paused THEN 1 ELSE 0 END, NULL, NULL, NULL, 0, NULL, '', NULL
FROM queue_state AS q WHERE q.id = 1""")


_LINE = {name: _line_statement(name) for name in _JOIN}


def stamp(value: Any) -> datetime | None:
    """A timestamp from a plain-SQL row: SQLite gives text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


@dataclass(frozen=True)
class Line:
    """The heads of the line, the running runs and the slots, read at one instant."""

    lists: list[list[Waiting]]
    truncated: frozenset[int]
    running: list[Holding]
    slots: int
    paused: bool


async def read_line(conn: Conn, k: int, default_slots: int) -> Line:
    """Up to `k` runs of each (priority, user) list, in order; the running runs; the slots."""
    rows = await conn.execute(
        _LINE[conn.dialect.name], {"k": max(1, k), "default_slots": default_slots}
    )
    pairs: dict[tuple[int, int | None], list[Waiting]] = {}
    running: list[Holding] = []
    slots, paused = default_slots, False
    for kind, run_id, priority, at, user_id, key, limit, case_id, tags, expires in rows:
        if kind == 1:
            queued = stamp(at) or _NEVER
            run = Waiting(run_id, priority, queued, user_id, key, limit, case_id, tags)
            if expires is not None:
                run = replace(run, expires_at=stamp(expires))
            pairs.setdefault((priority, user_id), []).append(run)
        elif kind == 2:
            running.append(Holding(run_id, user_id, key, case_id, stamp(at)))
        else:
            slots, paused = int(run_id), bool(priority)
    lists = [sorted(runs, key=_place) for runs in pairs.values()]
    running.sort(key=lambda held: (held.started_at or _NEVER, held.id))
    truncated = frozenset(i for i, runs in enumerate(lists) if len(runs) >= k)
    return Line(lists, truncated, running, slots, paused)


def waiting(row: Any) -> Waiting:
    """A row with the columns of `Waiting` (as `concurrency_key`, `concurrency_limit`)."""
    return Waiting(
        id=row.id,
        priority=row.priority,
        queued_at=as_utc(row.queued_at),
        user_id=row.user_id,
        key=row.concurrency_key,
        key_limit=row.concurrency_limit,
        test_case_id=row.test_case_id,
        required_tags=row.required_tags,
        expires_at=as_utc(row.expires_at) if row.expires_at else None,
    )


_NEVER = datetime.max.replace(tzinfo=UTC)


def _place(run: Waiting) -> tuple[Any, int]:
    return (run.queued_at, run.id)
