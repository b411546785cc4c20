"""Reading the queue: what runs, what waits, at which position, and why.

Everything here is read in one snapshot so the counts and the page agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, literal, select

from testqueue.database import Conn, Database
from testqueue.models import Execution, QueueState, Worker, as_utc, utcnow
from testqueue.queue.order import LINE_ORDER, PENDING, RUNNING
from testqueue.vocabulary import decode_tags

E = Execution


@dataclass(frozen=True)
class Snapshot:
    """The queue at one instant: counts, slots, a page of the line and the active runs."""

    queued_count: int
    active_count: int
    max_concurrent: int
    paused: bool
    offset: int
    queue: list[dict[str, Any]]
    active: list[dict[str, Any]]

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent - self.active_count)


def slots_in_force(default: Any) -> ColumnElement[int]:
    """The global slots: an admin's runtime number, else what the latest worker
    started with, else `default` (this process's MAX_CONCURRENT_EXECUTIONS)."""
    return func.coalesce(QueueState.max_concurrent, QueueState.configured_slots, default)


def _slots_and_counts(count_pending: bool) -> Any:
    running = select(func.count()).where(RUNNING).scalar_subquery()
    pending = select(func.count()).where(PENDING).scalar_subquery() if count_pending else literal(0)
    slots = slots_in_force(bindparam("default_slots", type_=Integer))
    return select(slots, QueueState.paused, running, pending).where(QueueState.id == 1)


_SLOTS_AND_COUNTS = {counted: _slots_and_counts(counted) for counted in (True, False)}


async def slots_and_counts(
    conn: Conn, default_slots: int, *, count_pending: bool = True
) -> tuple[int, int, int, bool]:
    """(slots in force, running, pending, paused) from one statement.

    Counting a long line costs milliseconds; without `count_pending` it is 0.
    """
    statement = _SLOTS_AND_COUNTS[count_pending]
    row = (await conn.execute(statement, {"default_slots": default_slots})).one()
    return int(row[0]), int(row[2]), int(row[3]), bool(row[1])


async def configured_slots(conn: Conn, default_slots: int) -> int:
    """The slots without an admin's runtime number: what the latest worker started with."""
    stored = (await conn.execute(_CONFIGURED)).scalar_one_or_none()
    return int(stored or default_slots)


_CONFIGURED = select(QueueState.configured_slots).where(QueueState.id == 1)


async def snapshot(
    db: Database, default_slots: int, lease_ttl_s: float, limit: int, offset: int
) -> Snapshot:
    """Counts, a page of the line (positions from `offset + 1`) and the running executions."""
    async with db.read() as conn:
        slots, running, pending, paused = await slots_and_counts(conn, default_slots)
        line = await conn.execute(
            select(*_QUEUE_COLUMNS).where(PENDING).order_by(*LINE_ORDER).limit(limit).offset(offset)
        )
        active = await conn.execute(
            select(*_ACTIVE_COLUMNS).where(RUNNING).order_by(E.started_at, E.id)
        )
        tags = await live_worker_tags(conn, lease_ttl_s)
        queue_rows = [dict(row._mapping) for row in line]
        active_rows = [dict(row._mapping) for row in active]
    snap = Snapshot(pending, running, slots, paused, offset, queue_rows, active_rows)
    for index, row in enumerate(snap.queue):
        row["queue_position"] = offset + index + 1
        row["wait_reason"] = wait_reason(snap, row["queue_position"], row["required_tags"], tags)
    return snap


_QUEUE_COLUMNS = (
    E.id.label("execution_id"),
    E.test_case_id,
    E.user_id,
    E.priority,
    E.queued_at,
    E.attempt,
    E.required_tags,
)
_ACTIVE_COLUMNS = (
    E.id.label("execution_id"),
    E.test_case_id,
    E.user_id,
    E.priority,
    E.queued_at,
    E.started_at,
    E.attempt,
    E.worker_id,
    E.cancel_requested,
)


def wait_reason(
    snap: Snapshot, position: int, required_tags: str, worker_tags: list[set[str]] | None
) -> str:
    """Why a pending execution is not running yet, in words."""
    if snap.paused:
        return "the queue is paused; it starts when an admin resumes it"
    if worker_tags is not None and not worker_tags:
        return "no worker is running; it starts when one signs in"
    needed = set(decode_tags(required_tags))
    if needed and worker_tags is not None and not any(needed <= tags for tags in worker_tags):
        return f"needs a worker with tags {', '.join(sorted(needed))}; no live worker has them"
    ahead = position - 1
    if position <= snap.free_slots:
        return "a slot is free; it is starting"
    if ahead == 0:
        return f"next in line; all {snap.max_concurrent} slots are busy"
    runs = "run" if ahead == 1 else "runs"
    return (
        f"all {snap.max_concurrent} slots are busy; "
        f"behind {ahead} {runs} of higher or equal priority"
    )


def live_after(lease_ttl_s: float) -> datetime:
    return utcnow() - timedelta(seconds=lease_ttl_s)


_LIVE_TAGS = select(Worker.tags).where(
    Worker.last_seen_at >= bindparam("cutoff", type_=Worker.last_seen_at.type)
)


async def live_worker_tags(conn: Conn, lease_ttl_s: float) -> list[set[str]]:
    """The tag sets of the workers that beat within the lease."""
    rows = await conn.execute(_LIVE_TAGS, {"cutoff": live_after(lease_ttl_s)})
    return [set(decode_tags(row.tags)) for row in rows]


async def workers(db: Database, lease_ttl_s: float) -> list[dict[str, Any]]:
    """Every worker seen lately, with what it runs and whether it is live."""
    cutoff = live_after(lease_ttl_s)
    async with db.read() as conn:
        rows = (await conn.execute(select(Worker).order_by(Worker.hostname, Worker.id))).all()
        running = await conn.execute(select(E.worker_id, E.id).where(RUNNING).order_by(E.id))
        by_worker: dict[str, list[int]] = {}
        for worker_id, execution_id in running:
            by_worker.setdefault(worker_id or "", []).append(execution_id)
    result = []
    for worker in rows:
        seen = as_utc(worker.last_seen_at)
        result.append(
            {
                "id": worker.id,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "capacity": worker.capacity,
                "tags": decode_tags(worker.tags),
                "started_at": worker.started_at,
                "last_seen_at": worker.last_seen_at,
                "running": by_worker.get(worker.id, []),
                "live": seen >= cutoff,
            }
        )
    return result


async def counts_by(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """How many executions are in each status, and how the completed ones ended."""
    async with db.read() as conn:
        statuses = await conn.execute(select(E.status, func.count()).group_by(E.status))
        results = await conn.execute(
            select(E.result, func.count()).where(E.result.is_not(None)).group_by(E.result)
        )
        return (
            {status: int(n) for status, n in statuses},
            {str(result): int(n) for result, n in results},
        )
