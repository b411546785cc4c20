"""Leases and recovery: the heartbeat, lost workers' runs, a clean hand-back, the registry.

A claim gives its run a lease; the worker's heartbeat renews the leases of
the runs it knows it holds. A run whose lease ran out goes back to its place
in line (attempt + 1), or ends after MAX_ATTEMPTS. A worker that stops
cleanly hands its runs back with their attempt unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from testqueue.database import Conn, Database
from testqueue.models import Execution, Worker, utcnow
from testqueue.queue import dialect, moves, outbox, retries
from testqueue.queue.claim import Claimer
from testqueue.queue.progress import save_progress
from testqueue.vocabulary import (
    CANCELLED_LOST,
    CANCELLED_RUNNING,
    FINAL_STATUSES,
    Progress,
    Result,
    Status,
    encode_tags,
)

E = Execution
STALE_WORKER_AGE = timedelta(hours=1)
REQUEUED = "its worker was lost; queued again at its original place in line"
RELEASED = "its worker shut down; queued again at its original place in line"


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned: the leases still held and the cancels asked for."""

    held: frozenset[int]
    cancel: frozenset[int]
    recovered: int


async def register_worker(
    db: Database, claimer: Claimer, hostname: str, pid: int, host_key: str
) -> None:
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
                tags=encode_tags(claimer.tags),
                host_key=host_key,
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
            renew = moves.keep(
                Status.RUNNING,
                E.worker_id == claimer.worker_id,
                E.id.in_(list(holding)),
                lease_expires_at=now + timedelta(seconds=claimer.lease_ttl_s),
            )
            rows = (await conn.execute(renew.returning(E.id, E.cancel_requested))).all()
        held = frozenset(row.id for row in rows)
        # A run that ended meanwhile has its whole log and steps in its finish;
        # the files it reported since belong to it all the same (append only).
        await save_progress(
            conn,
            [p if p.execution_id in held else replace(p, log=None, steps=None) for p in progress],
        )
        recovered = await _recover_expired(conn, db, now, max_attempts)
        await conn.execute(delete(Worker).where(Worker.last_seen_at < now - STALE_WORKER_AGE))
        if recovered:
            await dialect.signal(db, conn)
    if recovered:
        db.wakeups.wake()
    cancel = frozenset(row.id for row in rows if row.cancel_requested)
    return Beat(held=held, cancel=cancel, recovered=recovered)


async def _recover_expired(conn: Conn, db: Database, now: datetime, max_attempts: int) -> int:
    """Runs whose lease ran out go back to their place in line, or end after MAX_ATTEMPTS
    (those that end are told to webhooks)."""
    expired = E.lease_expires_at < now
    lost = {"worker_id": None, "lease_expires_at": None}
    await retries.keep_lost(conn, expired, now=now)
    cancelled = await outbox.end_runs(
        conn,
        db,
        moves.move(
            Status.RUNNING,
            Status.CANCELLED,
            expired,
            E.cancel_requested.is_(True),
            completed_at=now,
            error_message=CANCELLED_LOST,
            **lost,
        ),
        [outbox.CANCELLED],
    )
    exhausted = await outbox.end_runs(
        conn,
        db,
        moves.move(
            Status.RUNNING,
            Status.COMPLETED,
            expired,
            # Retries are the test's own tries; only lost workers count here.
            E.attempt - E.retried >= max_attempts,
            result=Result.ERROR,
            completed_at=now,
            error_message=f"its worker was lost in each of {max_attempts} attempts (MAX_ATTEMPTS)",
            **lost,
        ),
        [outbox.FINISHED],
    )
    requeued = await conn.execute(
        moves.move(
            Status.RUNNING,
            Status.PENDING,
            expired,
            attempt=E.attempt + 1,
            started_at=None,
            error_message=REQUEUED,
            **lost,
        )
    )
    return cancelled + exhausted + int(requeued.rowcount)


async def release(db: Database, claimer: Claimer) -> int:
    """Give back every run this worker holds (graceful shutdown) and sign it off.

    The runs go back to their place in line with their attempt unchanged: a
    clean hand-back is not a lost worker and does not count toward MAX_ATTEMPTS.
    A run someone asked to cancel meanwhile ends cancelled instead.
    """
    now = utcnow()
    mine = E.worker_id == claimer.worker_id
    back = {"worker_id": None, "lease_expires_at": None}
    async with db.write() as conn:
        await outbox.end_runs(
            conn,
            db,
            moves.move(
                Status.RUNNING,
                Status.CANCELLED,
                mine,
                E.cancel_requested.is_(True),
                completed_at=now,
                error_message=CANCELLED_RUNNING,
                **back,
            ),
            [outbox.CANCELLED],
        )
        released = await conn.execute(
            moves.move(
                Status.RUNNING,
                Status.PENDING,
                mine,
                started_at=None,
                error_message=RELEASED,
                **back,
            )
        )
        await conn.execute(delete(Worker).where(Worker.id == claimer.worker_id))
        await dialect.signal(db, conn)
    return int(released.rowcount)


async def attempts_now(db: Database, ids: Collection[int]) -> dict[int, tuple[int, bool]]:
    """Each run's attempt now, and whether it has ended (runs deleted since are missing)."""
    async with db.read() as conn:
        rows = await conn.execute(select(E.id, E.attempt, E.status).where(E.id.in_(list(ids))))
        return {row.id: (row.attempt, row.status in FINAL_STATUSES) for row in rows}


async def dead_workers(db: Database, host_key: str, is_alive: Callable[[int], bool]) -> list[str]:
    """Workers of this boot and PID namespace whose process is gone.

    Only those: a pid from another host or namespace names some other process
    here, or none, and says nothing about the worker.
    """
    async with db.read() as conn:
        rows = (
            await conn.execute(select(Worker.id, Worker.pid).where(Worker.host_key == host_key))
        ).all()
    return [row.id for row in rows if not is_alive(row.pid)]


async def expire_workers(db: Database, worker_ids: Sequence[str], max_attempts: int) -> int:
    """Recover the runs of workers known to be dead at once, and sign them off.

    A restarted `serve` need not wait out the lease of the process it replaces.
    """
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            moves.keep(
                Status.RUNNING,
                E.worker_id.in_(worker_ids),
                lease_expires_at=now - timedelta(seconds=1),
            )
        )
        recovered = await _recover_expired(conn, db, now, max_attempts)
        await conn.execute(delete(Worker).where(Worker.id.in_(worker_ids)))
        if recovered:
            await dialect.signal(db, conn)
    db.wakeups.wake()
    return recovered
