"""Reading the queue: what runs, what waits, at which position, and why.

Everything here is read in one snapshot so the counts and the page agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, literal, select

from testqueue.database import Conn, Database
from testqueue.models import Execution, QueueState, User, Worker, as_utc, utcnow
from testqueue.queue import estimates, forecast, line
from testqueue.queue.order import PENDING, RUNNING
from testqueue.queue.policy import Forecast, Policies, Waiting
from testqueue.queue.positions import place
from testqueue.vocabulary import FairShare, decode_tags

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


async def snapshot(db: Database, limit: int, offset: int) -> Snapshot:
    """Counts, a page of the line (positions from `offset + 1`) and the running executions.

    The page is the replayed line (`forecast`): the order the claim will take,
    each run with its effective priority, its likely start and end (None
    without history of its own, or while paused) and why it waits.
    """
    settings = db.settings
    policies = Policies.of(settings)
    async with db.read() as conn:
        slots, running, pending, paused = await slots_and_counts(
            conn, settings.max_concurrent_executions
        )
        seen = await forecast.outlook(
            conn,
            policies,
            settings.max_concurrent_executions,
            settings.execution_timeout,
            offset + limit,
        )
        page = seen.starts[offset : offset + limit]
        attempts = await _attempts(conn, [run.id for run, _ in page])
        active = await conn.execute(
            select(*_ACTIVE_COLUMNS).where(RUNNING).order_by(E.started_at, E.id)
        )
        active_rows = [dict(row._mapping) for row in active]
        tags = await live_worker_tags(conn, settings.lease_ttl)
        names = await _usernames(
            conn, {run.user_id for run, _ in page if seen.at_now.capped(run.user_id)}
        )
    snap = Snapshot(pending, running, slots, paused, offset, [], active_rows)
    why = Reasons(snap, policies, seen, tags, names)
    for index, (run, when) in enumerate(page):
        position = offset + index + 1
        snap.queue.append(
            {
                "execution_id": run.id,
                "attempt": attempts.get(run.id, 1),
                "required_tags": run.required_tags,
                "concurrency_key": run.key,
                "expires_at": run.expires_at,
                "test_case_id": run.test_case_id,
                "user_id": run.user_id,
                "priority": run.priority,
                "effective_priority": policies.effective(run.priority, run.queued_at, seen.now),
                "queued_at": run.queued_at,
                "queue_position": position,
                "wait_reason": why.of(run, position),
                **estimate(seen, run.test_case_id, when),
            }
        )
    for row in snap.active:
        known = seen.durations.own(row["test_case_id"]) is not None
        end = seen.running_ends.get(row["execution_id"])
        row["estimated_finish"] = end if known and not paused else None
    return snap


# A pending run this far back or further has no estimate: replaying that much of the
# line on every read of it would cost more than the guess is worth.
ESTIMATE_DEPTH = 500

_PENDING_RUN = select(
    E.id,
    E.priority,
    E.queued_at,
    E.user_id,
    E.concurrency_key,
    E.concurrency_limit,
    E.test_case_id,
    E.required_tags,
    E.expires_at,
).where(E.id == bindparam("run_id"), PENDING)


async def pending_detail(db: Database, execution_id: int) -> dict[str, Any]:
    """A pending run's position, effective priority, wait reason and estimates ({} when it
    is not pending)."""
    settings = db.settings
    policies = Policies.of(settings)
    async with db.read() as conn:
        row = (await conn.execute(_PENDING_RUN, {"run_id": execution_id})).one_or_none()
        if row is None:
            return {}
        run = line.waiting(row)
        position, replayed = await place(conn, db, run.id, run.priority, run.queued_at)
        slots, running, pending, paused = await slots_and_counts(
            conn, settings.max_concurrent_executions, count_pending=False
        )
        tags = await live_worker_tags(conn, settings.lease_ttl)
        # The replay that placed it (policies reorder the line) serves the estimate too.
        seen = replayed or await forecast.outlook(
            conn,
            policies,
            settings.max_concurrent_executions,
            settings.execution_timeout,
            0 if paused else min(position, ESTIMATE_DEPTH),
            until=run.id,
        )
        names = await _usernames(conn, {run.user_id} if seen.at_now.capped(run.user_id) else set())
    snap = Snapshot(pending, running, slots, paused, 0, [], [])
    when = next((w for r, w in seen.starts if r.id == run.id), None)
    return {
        "queue_position": position,
        "effective_priority": policies.effective(run.priority, run.queued_at, seen.now),
        "wait_reason": Reasons(snap, policies, seen, tags, names).of(run, position),
        **(
            estimate(seen, run.test_case_id, when)
            if when is not None
            else {"estimated_start": None, "estimated_finish": None}
        ),
    }


async def running_finish(
    conn: Conn, test_case_id: int | None, started_at: datetime, default_timeout_s: float
) -> datetime | None:
    """When a running run will likely end: None without history of its own test case."""
    durations = await estimates.recent_durations(conn, [test_case_id])
    expected = durations.own(test_case_id)
    if expected is None:
        return None
    return estimates.likely_end(utcnow(), started_at, expected, default_timeout_s)


def estimate(seen: forecast.Outlook, test_case_id: int | None, when: Forecast) -> dict[str, Any]:
    """A pending run's likely start and end: none while paused or without its own history."""
    if seen.paused or seen.durations.own(test_case_id) is None:
        return {"estimated_start": None, "estimated_finish": None}
    return {"estimated_start": when.start, "estimated_finish": when.finish}


async def _attempts(conn: Conn, ids: list[int]) -> dict[int, int]:
    """The attempt of each run shown (the rest of a row comes from the line as read)."""
    if not ids:
        return {}
    rows = await conn.execute(select(E.id, E.attempt).where(E.id.in_(ids)))
    return {row.id: row.attempt for row in rows}


async def _usernames(conn: Conn, user_ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in user_ids if i is not None}
    if not wanted:
        return {}
    rows = await conn.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    return {row.id: row.username for row in rows}


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


@dataclass(frozen=True)
class Reasons:
    """Why each pending run is not running yet, in words, from one replay of the line."""

    snap: Snapshot
    policies: Policies
    seen: forecast.Outlook
    worker_tags: list[set[str]] | None
    names: dict[int, str]

    def of(self, run: Waiting, position: int) -> str:
        snap, worker_tags = self.snap, self.worker_tags
        if snap.paused:
            return "the queue is paused; it starts when an admin resumes it"
        if worker_tags is not None and not worker_tags:
            return "no worker is running; it starts when one signs in"
        needed = set(decode_tags(run.required_tags))
        if needed and worker_tags is not None and not any(needed <= t for t in worker_tags):
            return f"needs a worker with tags {', '.join(sorted(needed))}; no live worker has them"
        held = self.seen.at_now.blocked(run)
        if held.user_cap:
            name = self.names.get(run.user_id or 0, f"user {run.user_id}")
            count = self.seen.at_now.by_user[run.user_id]
            return f"{name} has {count} running (the cap is {self.policies.user_cap})"
        if run.key is not None and self.seen.at_now.key_full(run):
            holder = f"#{held.key_holder}" if held.key_holder else "another run"
            return f"waiting for {holder} (same key {run.key}, limit {run.key_limit})"
        if position <= snap.free_slots:
            return "a slot is free; it is starting"
        ahead = position - 1
        if ahead == 0:
            return f"next in line; all {snap.max_concurrent} slots are busy{self._aged(run)}"
        runs = "run" if ahead == 1 else "runs"
        busy = f"all {snap.max_concurrent} slots are busy; behind {ahead} {runs}"
        passed = self._fair_share_ahead(run, position)
        if passed:
            busy += f" (fair share: {passed} of them by users with fewer running)"
        else:
            busy += " of higher or equal priority"
        return busy + self._aged(run)

    def _aged(self, run: Waiting) -> str:
        """How far waiting raised its priority, if at all."""
        level = self.policies.effective(run.priority, run.queued_at, self.seen.now)
        if level == run.priority:
            return ""
        return f"; waiting raised its priority from {run.priority} to {level}"

    def _fair_share_ahead(self, run: Waiting, position: int) -> int:
        """Runs ahead of this one only because their users have fewer running."""
        if self.policies.fair_share != FairShare.USER:
            return 0
        now = self.seen.now
        level = self.policies.effective(run.priority, run.queued_at, now)
        return sum(
            1
            for other, _ in self.seen.starts[: position - 1]
            if (other.queued_at, other.id) > (run.queued_at, run.id)
            and self.policies.effective(other.priority, other.queued_at, now) == level
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
