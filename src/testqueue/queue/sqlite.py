"""SQLite: one writer at a time, no LISTEN, positions counted from the nearer end.

Every write transaction already starts with `BEGIN IMMEDIATE` on the process's
single writer connection (see `testqueue.database`), so the file lock itself
serialises claims across processes; nothing more is needed for the claim.
SQLAlchemy drops `FOR UPDATE` on SQLite, so no query here pretends to lock rows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, String, Subquery, bindparam, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import Insert

from testqueue.database import Conn, Database
from testqueue.models import Execution, LineCount
from testqueue.queue.order import PENDING, SAME_AHEAD, SAME_BEHIND, SHAPE

E = Execution


def _ends_statement() -> Any:
    """Runs of higher priority, runs of this one, and the ids at both ends of it."""
    priority = bindparam("a_priority", type_=Integer)
    same = select(E.id).where(PENDING, E.priority == priority).limit(1)
    return select(
        select(func.coalesce(func.sum(LineCount.pending), 0))
        .where(LineCount.priority < priority)
        .scalar_subquery(),
        select(LineCount.pending).where(LineCount.priority == priority).scalar_subquery(),
        same.order_by(E.queued_at, E.id).scalar_subquery(),
        same.order_by(E.queued_at.desc(), E.id.desc()).scalar_subquery(),
        *SHAPE,
    )


_ENDS = _ends_statement()


class SqliteDialect:
    name = "sqlite"

    @asynccontextmanager
    async def claiming(
        self, db: Database, worth: ColumnElement[bool] | None
    ) -> AsyncIterator[Conn | None]:
        """A write transaction: it already holds the database's write lock.

        `worth` is not looked at: with one writer the look would cost as much as the claim.
        """
        async with db.write() as conn:
            yield conn

    def skip_locked(self, stmt: Select[Any]) -> Select[Any]:
        return stmt

    def among(self, column: Any, ids: Select[Any]) -> ColumnElement[bool]:
        # An uncorrelated IN list is computed once.
        return column.in_(ids.scalar_subquery())  # type: ignore[no-any-return]

    async def notify(self, conn: Conn, payload: str = "") -> None:
        """Other processes on SQLite learn of changes by the safety-net poll and heartbeats."""

    async def listen(
        self, db: Database, on_notify: Callable[[str], None], stopping: asyncio.Event
    ) -> None:
        """Nothing to hear: SQLite has no notifications (see `notify`)."""
        await stopping.wait()

    async def count_ahead(
        self, conn: Conn, priority: int, queued_at: datetime, execution_id: int
    ) -> tuple[int, tuple[Any, ...]]:
        """Counted from the nearer end of this priority's part of the line.

        `line_counts` (kept by triggers, migration 0004) holds the runs per
        priority, and the ids at the part's two ends tell which end is nearer:
        exact either way, and about half the walk at worst (40 ns an entry).
        """
        params = {"a_priority": priority, "a_queued_at": queued_at, "a_id": execution_id}
        higher, total, first, last, *shape = (await conn.execute(_ENDS, params)).one()
        from_back = total and first is not None and last is not None
        if not (from_back and execution_id - first > last - execution_id):
            same = int((await conn.execute(SAME_AHEAD, params)).scalar_one())
            return int(higher) + same, tuple(shape)
        behind = int((await conn.execute(SAME_BEHIND, params)).scalar_one())
        return int(higher) + int(total) - 1 - behind, tuple(shape)

    def numbered(self) -> Subquery:
        # One JSON text of [case_id, priority] pairs; json_each's `key` is the place.
        listed = func.json_each(bindparam("listed", type_=String)).table_valued("key", "value")
        return select(
            listed.c.key.label("n"),
            func.json_extract(listed.c.value, "$[0]").label("case_id"),
            func.json_extract(listed.c.value, "$[1]").label("priority"),
        ).subquery("listed")

    def numbered_params(self, rows: list[tuple[int, int | None]]) -> dict[str, Any]:
        return {"listed": json.dumps(rows)}

    def upsert(
        self,
        table: Any,
        keys: list[Any],
        columns: list[str],
        computed: Mapping[str, Any] | None = None,
    ) -> Insert:
        stmt = sqlite.insert(table)
        changes = {name: stmt.excluded[name] for name in columns}
        return stmt.on_conflict_do_update(index_elements=keys, set_={**changes, **(computed or {})})
