"""The dispatcher's side of the queue: claim, finish, renew leases, recover.

A worker touches the database in two rhythms: `settle` on every wake-up
(record what finished, claim what fits, in one transaction) and `heartbeat`
every HEARTBEAT_INTERVAL (renew leases, save progress, learn of cancels,
recover runs whose worker vanished).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from testqueue.database import Conn, Database
from testqueue.models import (
    Artifact,
    Execution,
    ExecutionLog,
    ExecutionStep,
    QueueState,
    Result,
    Status,
    TestCase,
    Worker,
    utcnow,
)
from testqueue.queue import dialect
from testqueue.queue.positions import LINE_ORDER, PENDING, RUNNING, line_filter
from testqueue.queue.status import slots_in_force
from testqueue.runners.base import ArtifactRecord, StepRecord

E = Execution


@dataclass(frozen=True)
class Claimed:
    """A run this worker now holds the lease for."""

    id: int
    test_case_id: int | None
    attempt: int
    priority: int
    base_url: str | None
    browser: str | None
    environment: str | None
    case: Any  # the test case row, or None when it was deleted


@dataclass(frozen=True)
class Progress:
    """What a run has reported since it was last saved; None fields are unchanged."""

    execution_id: int
    log: str | None = None
    cut_bytes: int = 0
    steps: Sequence[StepRecord] | None = None
    artifacts: Sequence[ArtifactRecord] = ()


@dataclass(frozen=True)
class Finished:
    """How a run this worker held ended, ready to be recorded."""

    id: int
    attempt: int
    result: Result | None
    exit_code: int | None
    error_message: str | None
    steps: tuple[int, int, int, int] = (0, 0, 0, 0)  # total, passed, failed, skipped
    progress: Progress | None = None


@dataclass(frozen=True)
class Claimer:
    """Who claims, how much it may take, and the global slots if no admin changed them."""

    worker_id: str
    default_slots: int
    lease_ttl_s: float
    capacity: int
    tags: frozenset[str] = frozenset()


async def settle(
    db: Database, claimer: Claimer, finished: Sequence[Finished], want: int
) -> list[Claimed]:
    """Record finished runs and claim up to `want` more, in one transaction.

    Finishing and claiming together means a freed slot is refilled in the same
    commit that frees it. A wake-up with nothing to record takes the claim lock
    only if a slot looks free and something waits (`_worth_claiming`, on
    PostgreSQL): many workers woken by one NOTIFY then queue on the lock only
    when there is work.
    """
    if not finished and want <= 0:
        return []
    worth = None if finished else _worth_claiming(claimer.default_slots)
    async with dialect.of(db).claiming(db, worth) as conn:
        if conn is None:
            return []
        if finished:
            await _record_finished(conn, claimer.worker_id, finished)
            await save_progress(conn, [f.progress for f in finished if f.progress])
        claimed = await _claim(db, conn, claimer, want) if want > 0 else []
        if finished:
            await dialect.signal(db, conn, f"freed:{claimer.worker_id}")
    return claimed


@functools.cache
def _worth_claiming(default_slots: int) -> ColumnElement[bool]:
    """Is the queue running with a free slot and a run waiting?

    Only a hint, read before the claim's lock; the claim counts again under it.
    """
    running = select(func.count()).where(RUNNING).scalar_subquery()
    waiting = select(E.id).where(PENDING).limit(1).exists()
    slots = slots_in_force(default_slots)
    return and_(QueueState.id == 1, QueueState.paused.is_(False), running < slots, waiting)


_FINISH = (
    update(E)
    .where(
        E.id == bindparam("f_id"),
        # The attempt guards against a lease lost and the run claimed again meanwhile.
        E.attempt == bindparam("f_attempt"),
        RUNNING,
        E.worker_id == bindparam("f_worker"),
    )
    .values(
        status=case((E.cancel_requested, Status.CANCELLED), else_=Status.COMPLETED),
        result=case((E.cancel_requested, None), else_=bindparam("f_result")),
        exit_code=bindparam("f_exit_code"),
        error_message=bindparam("f_error"),
        completed_at=bindparam("f_now"),
        lease_expires_at=None,
        total_steps=bindparam("f_total"),
        passed_steps=bindparam("f_passed"),
        failed_steps=bindparam("f_failed"),
        skipped_steps=bindparam("f_skipped"),
    )
)


async def _record_finished(conn: Conn, worker_id: str, finished: Sequence[Finished]) -> None:
    now = utcnow()
    await conn.execute(
        _FINISH,
        [
            {
                "f_id": f.id,
                "f_worker": worker_id,
                "f_now": now,
                "f_attempt": f.attempt,
                "f_result": f.result.value if f.result else None,
                "f_exit_code": f.exit_code,
                "f_error": _text(f.error_message),
                "f_total": f.steps[0],
                "f_passed": f.steps[1],
                "f_failed": f.steps[2],
                "f_skipped": f.steps[3],
            }
            for f in finished
        ],
    )


# The claim's statements are built once: building them costs more than running them.
_CASES = select(TestCase).where(TestCase.id.in_(bindparam("case_ids", expanding=True)))
# Each claimed run says when its test case last changed, so a worker reads a
# test case again only when it changed (or was never read): one statement
# fewer between a wake-up and a run's start.
_CASE_VERSION = select(TestCase.updated_at).where(TestCase.id == E.test_case_id).scalar_subquery()
CASES_KEPT = 1000
_known_cases: weakref.WeakKeyDictionary[Database, dict[int, Any]] = weakref.WeakKeyDictionary()


def _free_slots() -> Any:
    """How many to take: 0 while paused, else min(:claim_want, slots - running), not below 0.

    Counted inside the claim's own statement, under the claim's lock: two
    workers counting first would both see the last free slot.
    """
    running = select(func.count()).where(RUNNING).scalar_subquery()
    slots = slots_in_force(bindparam("claim_slots", type_=Integer))
    state = (
        select(QueueState.paused.label("paused"), (slots - running).label("free"))
        .where(QueueState.id == 1)
        .subquery()
    )
    want = bindparam("claim_want", type_=Integer)
    amount = case(
        (state.c.paused, 0),
        (state.c.free <= 0, 0),
        (state.c.free < want, state.c.free),
        else_=want,
    )
    return select(amount).scalar_subquery()


@functools.cache
def _take(tags: frozenset[str], skip_locked: Callable[[Any], Any]) -> Any:
    """UPDATE ... WHERE id IN (the first free-slots in line) RETURNING what a run needs."""
    candidates = select(E.id).where(line_filter(tags)).order_by(*LINE_ORDER).limit(_free_slots())
    candidates = skip_locked(candidates)
    return (
        update(E)
        .where(E.id.in_(candidates.scalar_subquery()))
        .values(
            status=Status.RUNNING,
            worker_id=bindparam("claim_worker"),
            started_at=bindparam("claim_now"),
            lease_expires_at=bindparam("claim_lease"),
        )
        .returning(
            E.id,
            E.test_case_id,
            E.attempt,
            E.priority,
            E.queued_at,
            E.base_url,
            E.browser,
            E.environment,
            _CASE_VERSION.label("case_version"),
        )
    )


async def _claim(db: Database, conn: Conn, claimer: Claimer, want: int) -> list[Claimed]:
    now = utcnow()
    params = {
        "claim_want": want,
        "claim_slots": claimer.default_slots,
        "claim_worker": claimer.worker_id,
        "claim_now": now,
        "claim_lease": now + timedelta(seconds=claimer.lease_ttl_s),
    }
    taken = (await conn.execute(_take(claimer.tags, dialect.of(db).skip_locked), params)).all()
    if not taken:
        return []
    cases = await _cases_of(db, conn, taken)
    taken = sorted(taken, key=lambda r: (r.priority, r.queued_at, r.id))
    return [
        Claimed(
            id=r.id,
            test_case_id=r.test_case_id,
            attempt=r.attempt,
            priority=r.priority,
            base_url=r.base_url,
            browser=r.browser,
            environment=r.environment,
            case=cases.get(r.test_case_id),
        )
        for r in taken
    ]


async def _cases_of(db: Database, conn: Conn, taken: Sequence[Any]) -> dict[int, Any]:
    """The test case rows of claimed runs: kept ones while unchanged, the rest read now."""
    known = _known_cases.setdefault(db, {})
    versions = {r.test_case_id: r.case_version for r in taken if r.case_version is not None}
    stale = {
        case_id
        for case_id, version in versions.items()
        if case_id not in known or known[case_id].updated_at != version
    }
    found = {case_id: known[case_id] for case_id in versions if case_id not in stale}
    if stale:
        rows = (await conn.execute(_CASES, {"case_ids": list(stale)})).all()
        found.update((case.id, case) for case in rows)
        if len(known) + len(rows) > CASES_KEPT:
            known.clear()
        known.update((case.id, case) for case in rows)
    return found


async def save_progress(conn: Conn, progress: Sequence[Progress]) -> None:
    """Store logs, steps and artifacts so they can be read while the run goes on.

    A handful of statements for any number of runs: one pass may save many.
    """
    logs = [p for p in progress if p.log is not None]
    if logs:
        rows = [
            {"execution_id": p.execution_id, "content": _text(p.log), "cut_bytes": p.cut_bytes}
            for p in logs
        ]
        await conn.execute(_upsert_logs(conn.dialect.name), rows)
    steps = [p for p in progress if p.steps is not None]
    if steps:
        await conn.execute(
            delete(ExecutionStep).where(
                ExecutionStep.execution_id.in_([p.execution_id for p in steps])
            )
        )
        rows = [_step_row(p.execution_id, step) for p in steps for step in p.steps or ()]
        if rows:
            await conn.execute(insert(ExecutionStep), rows)
    artifacts = [_artifact_row(p.execution_id, a) for p in progress for a in p.artifacts]
    if artifacts:
        await conn.execute(insert(Artifact), artifacts)


@functools.cache
def _upsert_logs(dialect_name: str) -> Any:
    """INSERT ... ON CONFLICT (execution_id) DO UPDATE: one statement, first save or not."""
    build = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    stmt = build(ExecutionLog)
    return stmt.on_conflict_do_update(
        index_elements=[ExecutionLog.execution_id],
        set_={"content": stmt.excluded.content, "cut_bytes": stmt.excluded.cut_bytes},
    )


@overload
def _text(value: str) -> str: ...
@overload
def _text(value: None) -> None: ...
def _text(value: str | None) -> str | None:
    """What a run wrote, storable: PostgreSQL text cannot hold NUL, and a value
    with one would fail every save of the run (leases included)."""
    return None if value is None else value.replace("\0", "\N{REPLACEMENT CHARACTER}")


def _step_row(execution_id: int, step: StepRecord) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "number": step.number,
        "action": step.action,
        "description": _text(step.description),
        "result": step.result,
        "duration_ms": step.duration_ms,
        "error_message": _text(step.error_message),
        "screenshot": step.screenshot,
    }


def _artifact_row(execution_id: int, artifact: ArtifactRecord) -> dict[str, Any]:
    size = artifact.path.stat().st_size if artifact.path.exists() else 0
    return {
        "execution_id": execution_id,
        "kind": artifact.kind,
        "name": artifact.name,
        "path": str(artifact.path),
        "content_type": artifact.content_type,
        "size_bytes": size,
        "created_at": utcnow(),
    }


# -- leases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned: the leases still held and the cancels asked for."""

    held: frozenset[int]
    cancel: frozenset[int]
    recovered: int


async def register_worker(db: Database, claimer: Claimer, hostname: str, pid: int) -> None:
    """Announce this worker; `GET /executions/queue/workers` lists it while it beats."""
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(delete(Worker).where(Worker.id == claimer.worker_id))
        await conn.execute(
            insert(Worker).values(
                id=claimer.worker_id,
                hostname=hostname,
                pid=pid,
                capacity=claimer.capacity,
                tags=",".join(sorted(claimer.tags)),
                started_at=now,
                last_seen_at=now,
            )
        )


async def heartbeat(
    db: Database,
    claimer: Claimer,
    progress: Sequence[Progress],
    max_attempts: int,
    holding: Collection[int] = (),
) -> Beat:
    """Renew the leases of the runs this worker is `holding`, save progress, recover lost runs.

    Only the runs the worker knows it holds are renewed: a claim whose COMMIT
    succeeded but whose answer was lost is not running here, so its lease runs
    out and it is recovered like any other lost run.
    """
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            update(Worker).where(Worker.id == claimer.worker_id).values(last_seen_at=now)
        )
        rows: Sequence[Any] = ()
        if holding:
            rows = (
                await conn.execute(
                    update(E)
                    .where(RUNNING, E.worker_id == claimer.worker_id, E.id.in_(list(holding)))
                    .values(lease_expires_at=now + timedelta(seconds=claimer.lease_ttl_s))
                    .returning(E.id, E.cancel_requested)
                )
            ).all()
        held = frozenset(row.id for row in rows)
        await save_progress(conn, [p for p in progress if p.execution_id in held])
        recovered = await _recover_expired(conn, now, max_attempts)
        await conn.execute(delete(Worker).where(Worker.last_seen_at < now - STALE_WORKER_AGE))
        if recovered:
            await dialect.signal(db, conn)
    if recovered:
        db.wake()
    cancel = frozenset(row.id for row in rows if row.cancel_requested)
    return Beat(held=held, cancel=cancel, recovered=recovered)


STALE_WORKER_AGE = timedelta(hours=1)


async def _recover_expired(conn: Conn, now: datetime, max_attempts: int) -> int:
    """Runs whose lease ran out go back to their place in line, or end after MAX_ATTEMPTS."""
    expired = and_(RUNNING, E.lease_expires_at < now)
    lost = {"worker_id": None, "lease_expires_at": None}
    cancelled = await conn.execute(
        update(E)
        .where(expired, E.cancel_requested)
        .values(status=Status.CANCELLED, completed_at=now, error_message=CANCELLED_LOST, **lost)
    )
    exhausted = await conn.execute(
        update(E)
        .where(expired, E.attempt >= max_attempts)
        .values(
            status=Status.COMPLETED,
            result=Result.ERROR,
            completed_at=now,
            error_message=f"its worker was lost in each of {max_attempts} attempts (MAX_ATTEMPTS)",
            **lost,
        )
    )
    requeued = await conn.execute(
        update(E)
        .where(expired)
        .values(
            status=Status.PENDING,
            attempt=E.attempt + 1,
            started_at=None,
            error_message=REQUEUED,
            **lost,
        )
    )
    return int(cancelled.rowcount + exhausted.rowcount + requeued.rowcount)


CANCELLED_LOST = "cancelled; its worker stopped before it could confirm"
REQUEUED = "its worker was lost; queued again at its original place in line"


async def release(db: Database, claimer: Claimer) -> int:
    """Give back every run this worker holds (graceful shutdown) and sign it off.

    The runs go back to their place in line with their attempt unchanged: a
    clean hand-back is not a lost worker and does not count toward MAX_ATTEMPTS.
    A run someone asked to cancel meanwhile ends cancelled instead.
    """
    now = utcnow()
    mine = and_(RUNNING, E.worker_id == claimer.worker_id)
    back = {"worker_id": None, "lease_expires_at": None}
    async with db.write() as conn:
        await conn.execute(
            update(E)
            .where(mine, E.cancel_requested)
            .values(status=Status.CANCELLED, completed_at=now, error_message=CANCELLED, **back)
        )
        released = await conn.execute(
            update(E)
            .where(mine)
            .values(status=Status.PENDING, started_at=None, error_message=RELEASED, **back)
        )
        await conn.execute(delete(Worker).where(Worker.id == claimer.worker_id))
        await dialect.signal(db, conn)
    return int(released.rowcount)


CANCELLED = "cancelled while running"
RELEASED = "its worker shut down; queued again at its original place in line"


async def dead_workers(db: Database, hostname: str, is_alive: Callable[[int], bool]) -> list[str]:
    """Workers registered on this host whose process is gone."""
    async with db.read() as conn:
        rows = (
            await conn.execute(select(Worker.id, Worker.pid).where(Worker.hostname == hostname))
        ).all()
    return [row.id for row in rows if not is_alive(row.pid)]


async def expire_workers(db: Database, worker_ids: Sequence[str], max_attempts: int) -> int:
    """Recover the runs of workers known to be dead at once, and sign them off.

    A restarted `serve` need not wait out the lease of the process it replaces.
    """
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            update(E)
            .where(RUNNING, E.worker_id.in_(worker_ids))
            .values(lease_expires_at=now - timedelta(seconds=1))
        )
        recovered = await _recover_expired(conn, now, max_attempts)
        await conn.execute(delete(Worker).where(Worker.id.in_(worker_ids)))
        if recovered:
            await dialect.signal(db, conn)
    db.wake()
    return recovered
