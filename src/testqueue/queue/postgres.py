"""PostgreSQL: an advisory lock around the claim, SKIP LOCKED rows, LISTEN/NOTIFY.

Claims take `pg_advisory_xact_lock` first, so counting the running executions
and taking the free slots is one serial step across every worker: two workers
counting at once would both see the last free slot. `SKIP LOCKED` then lets a
claim pass over rows a cancel or priority change holds at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import ColumnElement, Integer, Select, Subquery, bindparam, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql.dml import Insert

from testqueue.database import Conn, Database, application_name
from testqueue.queue.order import COUNT_AHEAD

log = logging.getLogger(__name__)

CHANNEL = "testqueue"
# What `listen` reports when its connection is (re)opened: notices may have been missed.
RECONNECTED = "reconnected"
LINE_LOCK_KEY = 0x7465_7374_7175  # "testqu": one key for the whole queue
RECONNECT_DELAY_S = 0.5
RECONNECT_DELAY_MAX_S = 5.0
# How long one wait for notifications lasts before `stopping` is looked at again.
LISTEN_TIMEOUT_S = 0.5


class PostgresDialect:
    name = "postgresql"

    def __init__(self) -> None:
        # The opening of a claim, compiled once per condition (see `_opening`).
        self._openings: dict[ColumnElement[bool] | None, str] = {}
        # The NOTIFYs of each claim under way, sent with its COMMIT (see `notify`).
        self._at_commit: dict[int, list[str]] = {}

    @asynccontextmanager
    async def claiming(
        self, db: Database, worth: ColumnElement[bool] | None
    ) -> AsyncIterator[Conn | None]:
        """A transaction holding the claim lock, or None when `worth` says there is nothing
        to take.

        BEGIN and the lock go to the server as one message (psycopg sends BEGIN
        on its own otherwise), and the look at whether claiming is worth it rides
        along; the claim's NOTIFYs ride along with its COMMIT: a claim is three
        round trips, a look that finds nothing two.
        """
        async with db.autocommit() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                cursor = await raw.execute(self._opening(worth, conn.dialect))
                cursor.nextset()
                taken = await cursor.fetchone() is not None
            except psycopg.Error:
                if raw.broken or raw.closed:
                    await db.connection_lost(conn)
                raise
            notices = self._at_commit[id(conn)] = []
            try:
                try:
                    yield conn if taken else None
                except BaseException:
                    with contextlib.suppress(psycopg.Error):  # a broken connection has none
                        await raw.execute("ROLLBACK")
                    raise
                try:
                    await raw.execute(_notifying(notices) + b"COMMIT")
                except psycopg.Error:
                    if raw.broken or raw.closed:
                        await db.connection_lost(conn)
                    raise
            finally:
                del self._at_commit[id(conn)]

    def _opening(self, worth: ColumnElement[bool] | None, dialect: Dialect) -> str:
        """BEGIN, then the lock, taken only if `worth` holds; a row comes back when it was.

        The conditions are the claim's own, built once each, so the compiled
        text is kept per condition.
        """
        if worth not in self._openings:
            lock = select(func.pg_advisory_xact_lock(LINE_LOCK_KEY))
            if worth is not None:
                lock = lock.where(worth)
            sql = lock.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            self._openings[worth] = f"BEGIN; {sql}"
        return self._openings[worth]

    def skip_locked(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.with_for_update(skip_locked=True)

    def among(self, column: Any, ids: Select[Any]) -> ColumnElement[bool]:
        """`= ANY(ARRAY(subquery))`: an InitPlan, run once. As `IN (subquery)` the planner
        may rescan a LIMIT ... SKIP LOCKED subquery per outer row, and each rescan
        passes over the rows the UPDATE has just changed and takes the next ones."""
        return column == func.any(func.array(ids.scalar_subquery()))  # type: ignore[no-any-return]

    async def notify(self, conn: Conn, payload: str = "") -> None:
        """Delivered to every listener when the transaction commits, and only then; in a
        claim, sent with its COMMIT rather than as a statement of its own."""
        notices = self._at_commit.get(id(conn))
        if notices is not None:
            notices.append(payload)
            return
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )

    async def listen(
        self, db: Database, on_notify: Callable[[str], None], stopping: asyncio.Event
    ) -> None:
        await listen(db.settings.database_url, on_notify, stopping)

    async def count_ahead(
        self, conn: Conn, priority: int, queued_at: datetime, execution_id: int
    ) -> tuple[int, tuple[Any, ...]]:
        """Counted from the front: counter rows like SQLite's would serialise
        concurrent writers on many hosts."""
        params = {"a_priority": priority, "a_queued_at": queued_at, "a_id": execution_id}
        ahead, *shape = (await conn.execute(COUNT_AHEAD, params)).one()
        return int(ahead), tuple(shape)

    def numbered(self) -> Subquery:
        # Two arrays side by side; WITH ORDINALITY numbers their elements.
        listed = (
            func.unnest(
                bindparam("case_ids", type_=postgresql.ARRAY(Integer)),
                bindparam("priorities", type_=postgresql.ARRAY(Integer)),
            )
            .table_valued("case_id", "priority", with_ordinality="n")
            .render_derived("rows")
        )
        return select(listed.c.n, listed.c.case_id, listed.c.priority).subquery("listed")

    def numbered_params(self, rows: list[tuple[int, int | None]]) -> dict[str, Any]:
        return {
            "case_ids": [case_id for case_id, _ in rows],
            "priorities": [priority for _, priority in rows],
        }

    def upsert(
        self,
        table: Any,
        keys: list[Any],
        columns: list[str],
        computed: Mapping[str, Any] | None = None,
    ) -> Insert:
        stmt = postgresql.insert(table)
        changes = {name: stmt.excluded[name] for name in columns}
        return stmt.on_conflict_do_update(index_elements=keys, set_={**changes, **(computed or {})})


def _notifying(payloads: list[str]) -> bytes:
    """`SELECT pg_notify(...);` for each payload, once each, to go before a COMMIT."""
    return b"".join(
        sql.SQL("SELECT pg_notify({}, {}); ")
        .format(sql.Literal(CHANNEL), sql.Literal(p))
        .as_bytes(None)
        for p in dict.fromkeys(payloads)
    )


def libpq_dsn(database_url: str) -> str:
    """The plain libpq connection string behind a SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(
    database_url: str, on_notify: Callable[[str], None], stopping: asyncio.Event
) -> None:
    """Call `on_notify(payload)` for each NOTIFY until `stopping` is set.

    A dropped connection is reopened with a growing delay; until it is back
    the dispatcher's poll (`QUEUE_CHECK_INTERVAL`) keeps the queue moving, and
    a reconnect wakes it once in case something was missed meanwhile.
    """
    delay = RECONNECT_DELAY_S
    dsn = libpq_dsn(database_url)
    while not stopping.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name=application_name()
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                log.info("listening for wake-ups", extra={"channel": CHANNEL})
                delay = RECONNECT_DELAY_S
                on_notify(RECONNECTED)
                await _relay(conn, on_notify, stopping)
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            log.warning("listen connection lost", extra={"error": str(exc), "retry_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX_S)


async def _relay(
    conn: psycopg.AsyncConnection[object], on_notify: Callable[[str], None], stopping: asyncio.Event
) -> None:
    while not stopping.is_set():
        async for notice in conn.notifies(timeout=LISTEN_TIMEOUT_S):
            on_notify(notice.payload)
