"""The order of the line, the filters that pick the pending and running runs, and the
statements that count a place in the line (invariants 2 and 7).

The next execution to start is the pending one with the lowest priority
number; ties go to the earliest `queued_at`, then the lowest id. Every count
here walks the partial index `ix_executions_line` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from testqueue.models import Execution
from testqueue.queue.moves import in_status
from testqueue.vocabulary import HIGHEST_PRIORITY, LOWEST_PRIORITY, Status

E = Execution
LINE_ORDER = (E.priority.asc(), E.queued_at.asc(), E.id.asc())
PENDING = in_status(Status.PENDING)
RUNNING = in_status(Status.RUNNING)


def tags_met(tags: Iterable[str]) -> ColumnElement[bool]:
    """True where a worker with `tags` has every tag the execution requires.

    Removing each of the worker's tags from the fenced list leaves ',' exactly
    when nothing required is missing; plain string functions, so both
    dialects run it the same way.
    """
    wanted = sorted({t.strip().lower() for t in tags if t.strip()})
    if not wanted:
        return E.required_tags == ""
    remaining: ColumnElement[Any] = func.replace(E.required_tags, f",{wanted[0]},", ",")
    for tag in wanted[1:]:
        remaining = func.replace(remaining, f",{tag},", ",")
    return or_(E.required_tags == "", remaining == literal(","))


def line_filter(tags: Iterable[str] | None = None) -> ColumnElement[bool]:
    """The pending executions; with `tags`, only those a worker with them may take."""
    return PENDING if tags is None else and_(PENDING, tags_met(tags))


def _same_priority(ahead: bool) -> Any:
    """Pending runs of this priority ahead of (or behind) this place, as two range counts.

    Two range counts over the line's index rather than one row-value
    comparison, which SQLite would answer by walking every pending row.
    """
    queued_at = bindparam("a_queued_at", type_=DateTime(True))
    same = E.priority == bindparam("a_priority", type_=Integer)
    execution_id = bindparam("a_id", type_=Integer)
    parts = (
        [E.queued_at < queued_at, and_(E.queued_at == queued_at, E.id < execution_id)]
        if ahead
        else [E.queued_at > queued_at, and_(E.queued_at == queued_at, E.id > execution_id)]
    )
    counts = [select(func.count()).where(PENDING, same, part).scalar_subquery() for part in parts]
    return counts[0] + counts[1]


def _higher() -> Any:
    return (
        select(func.count())
        .where(PENDING, E.priority < bindparam("a_priority", type_=Integer))
        .scalar_subquery()
    )


# -- the shape of the line: what decides how a place in it is found ---------------------

# Each priority's users waiting, one index probe each. `ORDER BY priority, user_id
# LIMIT 1` rather than min(): it names the fair-share index's order, so PostgreSQL walks
# that index instead of scanning another and filtering (as it did with min()).
_FIRST_USERS = " UNION ALL ".join(
    f"SELECT {p}, (SELECT f.user_id FROM executions AS f WHERE f.status = 'pending' "
    f"AND f.priority = {p} AND f.user_id IS NOT NULL ORDER BY f.priority, f.user_id LIMIT 1)"
    for p in range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1)
)
PAIRS = f"""
WITH RECURSIVE pairs(priority, user_id) AS (
  {_FIRST_USERS}
  UNION ALL
  SELECT pairs.priority, (SELECT f.user_id FROM executions AS f
                          WHERE f.status = 'pending' AND f.priority = pairs.priority
                            AND f.user_id > pairs.user_id
                          ORDER BY f.priority, f.user_id LIMIT 1)
  FROM pairs WHERE pairs.user_id IS NOT NULL
)"""
_FIRST_PRIORITY = "(SELECT min(priority) FROM executions WHERE status = 'pending')"
# One priority waits (or none): the common line, where aging cannot reorder anything.
_ONE_PRIORITY = (
    f"{_FIRST_PRIORITY} = (SELECT max(priority) FROM executions WHERE status = 'pending')"
)
_USER_OF_FIRST = (
    "(SELECT {0}(user_id) FROM executions "
    f"WHERE status = 'pending' AND priority = {_FIRST_PRIORITY})"
)
_OLDEST = " UNION ALL ".join(
    f"SELECT (SELECT min(queued_at) FROM executions WHERE status = 'pending' AND priority = {p})"
    " AS m"
    for p in range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1)
)

# Columns any count of a place may carry (`Dialect.count_ahead`), a few probes of the
# line's indexes when one priority waits (the common line): whether more than one user
# has runs waiting, whether a waiting run has a concurrency key, and, when several
# priorities wait, since when the oldest run waits (with one, aging reorders nothing).
MANY_USERS_WAITING: ColumnElement[int] = literal_column(
    f"(CASE WHEN {_ONE_PRIORITY} THEN CASE WHEN {_USER_OF_FIRST.format('min')} < "
    f"{_USER_OF_FIRST.format('max')} THEN 1 ELSE 0 END "
    f"ELSE ({PAIRS} SELECT CASE WHEN count(DISTINCT user_id) > 1 THEN 1 ELSE 0 END "
    "FROM pairs WHERE user_id IS NOT NULL) END)",
    type_=Integer,
)
KEYED_WAITING: ColumnElement[int] = literal_column(
    "(SELECT count(*) FROM (SELECT 1 FROM executions WHERE status = 'pending' "
    "AND concurrency_key IS NOT NULL LIMIT 1) AS keyed)",
    type_=Integer,
)
OLDEST_WAITING: ColumnElement[Any] = literal_column(
    f"(CASE WHEN {_ONE_PRIORITY} THEN NULL ELSE (SELECT min(m) FROM ({_OLDEST}) AS oldest) END)",
    type_=DateTime(True),
)
SHAPE = (
    MANY_USERS_WAITING.label("many_users"),
    KEYED_WAITING.label("keyed"),
    OLDEST_WAITING.label("oldest"),
)


# Each takes a_priority, a_queued_at and a_id: the place being counted from.
COUNT_AHEAD = select(_higher() + _same_priority(ahead=True), *SHAPE)
SAME_AHEAD = select(_same_priority(ahead=True))
SAME_BEHIND = select(_same_priority(ahead=False))
