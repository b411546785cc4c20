"""The order of the line and positions in it, counted when read (invariant 7).

The next execution to start is the pending one with the lowest priority
number; ties go to the earliest `queued_at`, then the lowest id. Every count
here walks the partial index `ix_executions_line` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
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

from testqueue.database import Conn
from testqueue.models import Execution, LineCount

E = Execution
LINE_ORDER = (E.priority.asc(), E.queued_at.asc(), E.id.asc())
# Literals, not bound parameters: SQLite uses a partial index only when it can
# see that the query's WHERE implies the index's.
PENDING = E.status == literal_column("'pending'")
RUNNING = E.status == literal_column("'running'")


def encode_tags(tags: Iterable[str]) -> str:
    """Tags as stored: sorted, comma-fenced (`,browser,linux,`), or '' for none."""
    clean = sorted({tag.strip().lower() for tag in tags if tag.strip()})
    return f",{','.join(clean)}," if clean else ""


def decode_tags(stored: str) -> list[str]:
    return [tag for tag in stored.split(",") if tag]


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


def _ends_statement() -> Any:
    """SQLite: runs of higher priority, runs of this one, and the ids at both ends of it."""
    priority = bindparam("a_priority", type_=Integer)
    same = select(E.id).where(PENDING, E.priority == priority).limit(1)
    return select(
        select(func.coalesce(func.sum(LineCount.pending), 0))
        .where(LineCount.priority < priority)
        .scalar_subquery(),
        select(LineCount.pending).where(LineCount.priority == priority).scalar_subquery(),
        same.order_by(E.queued_at, E.id).scalar_subquery(),
        same.order_by(E.queued_at.desc(), E.id.desc()).scalar_subquery(),
    )


_COUNT_AHEAD = select(_higher() + _same_priority(ahead=True))
_SAME_AHEAD = select(_same_priority(ahead=True))
_SAME_BEHIND = select(_same_priority(ahead=False))
_ENDS = _ends_statement()


async def count_ahead(conn: Conn, priority: int, queued_at: datetime, execution_id: int) -> int:
    """How many pending executions start before this pending one.

    Each count walks the index one entry at a time. PostgreSQL counts from the
    front. SQLite keeps the runs per priority (`line_counts`) and counts from
    the nearer end of this priority's part of the line, guessed from the ids
    at its ends: exact either way, and about half the walk at worst.
    """
    params = {"a_priority": priority, "a_queued_at": queued_at, "a_id": execution_id}
    if conn.dialect.name != "sqlite":
        return int((await conn.execute(_COUNT_AHEAD, params)).scalar_one())
    higher, total, first, last = (await conn.execute(_ENDS, params)).one()
    from_back = total and first is not None and last is not None
    if not (from_back and execution_id - first > last - execution_id):
        return int(higher) + int((await conn.execute(_SAME_AHEAD, params)).scalar_one())
    behind = int((await conn.execute(_SAME_BEHIND, params)).scalar_one())
    return int(higher) + int(total) - 1 - behind


async def position_of(conn: Conn, execution_id: int) -> int | None:
    """1 = next to start; None when the execution is not pending."""
    row = (
        await conn.execute(select(E.priority, E.queued_at).where(E.id == execution_id, PENDING))
    ).one_or_none()
    if row is None:
        return None
    return await count_ahead(conn, row.priority, row.queued_at, execution_id) + 1
