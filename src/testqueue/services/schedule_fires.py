"""Firing a schedule's tick: one batch per tick across every host, or a recorded reason why not.

A tick is claimed by moving the schedule's `next_fire_at` from the tick
seen to the next one (`UPDATE ... WHERE next_fire_at = :seen`): of two
schedulers racing, the second's update waits for the first's commit and
then matches no row. In the same transaction the batch is written and the
`schedule_fires` row that names it, whose UNIQUE(schedule_id, due_at) is
the last word: a tick is fired at most once whatever the claim missed, and
since the three writes commit together, a crash leaves either all of them
or none (the tick is then still due, and fired by whoever looks next).

A tick that cannot queue its batch (its suite deleted, its test cases
archived, the queue full, the owner disabled) is recorded on its fire row
and on the schedule (`last_error`), and the schedule goes on to its next tick.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from testqueue import errors, schedule_times
from testqueue.database import Conn, Database
from testqueue.models import Schedule, ScheduleFire, User, as_utc, utcnow
from testqueue.schedule_times import CatchUp
from testqueue.schemas.batches import BatchCreate
from testqueue.schemas.common import problem_text
from testqueue.services import batches

log = logging.getLogger(__name__)

S = Schedule
# Schedules fired per pass; a pass that finds this many due looks again at once.
DUE_PER_PASS = 100

_DUE = (
    select(S.id, S.name, S.owner_id, S.cron, S.timezone, S.catch_up, S.batch, S.next_fire_at)
    .where(S.next_fire_at <= bindparam("now", type_=S.next_fire_at.type), S.paused.is_(False))
    .order_by(S.next_fire_at, S.id)
    .limit(DUE_PER_PASS)
)
_NEXT = select(func.min(S.next_fire_at)).where(S.paused.is_(False))
_CLAIM = (
    update(S)
    .where(
        S.id == bindparam("s_id"),
        S.next_fire_at == bindparam("seen", type_=S.next_fire_at.type),
        S.paused.is_(False),
    )
    .values(
        next_fire_at=bindparam("next_at", type_=S.next_fire_at.type),
        last_error=bindparam("error", type_=S.last_error.type),
    )
)
_OWNER_ACTIVE = select(User.is_active).where(User.id == bindparam("owner"))


async def next_due(db: Database) -> datetime | None:
    """The earliest tick any running schedule waits for."""
    async with db.read() as conn:
        found = (await conn.execute(_NEXT)).scalar_one_or_none()
    return as_utc(found) if found is not None else None


async def fire_due(db: Database, now: datetime) -> int:
    """Fire every schedule whose tick has come by `now`; returns how many were looked at."""
    async with db.read() as conn:
        due = list((await conn.execute(_DUE, {"now": now})).all())
    for row in due:
        try:
            await fire(db, row, now)
        except Exception:  # one schedule's trouble must not hold up the others
            log.exception("schedule tick failed", extra={"schedule_id": row.id})
    return len(due)


async def fire(db: Database, row: Any, now: datetime) -> int | None:
    """Fire this schedule's due tick, if no one else has: the batch id, or None."""
    grace = timedelta(seconds=db.settings.schedule_grace)
    seen = as_utc(row.next_fire_at)
    plan = schedule_times.due(row.cron, row.timezone, seen, now, grace, CatchUp(row.catch_up))
    if plan.fire is None:
        log.info("schedule tick missed", extra={"schedule_id": row.id, "due_at": seen.isoformat()})
        async with db.write() as conn:
            await _claim(conn, row, seen, plan.next_at, None)
        return None
    try:
        batch_id = await _fire_batch(db, row, seen, plan)
    except IntegrityError:
        # This tick has its fire row already (a host with a slower clock fired it before
        # a retime came back to it): move on from it, or every pass would try it again.
        async with db.write() as conn:
            await _claim(conn, row, seen, plan.next_at, None)
        return None
    except (errors.TestqueueError, ValidationError) as exc:
        await _record_failure(db, row, seen, plan, _reason(exc))
        return None
    if batch_id is not None:
        db.wakeups.wake()
        log.info("schedule fired", extra={"schedule_id": row.id, "batch_id": batch_id})
    return batch_id


async def _fire_batch(
    db: Database, row: Any, seen: datetime, plan: schedule_times.Due
) -> int | None:
    """The claim, the batch and its fire row, in one transaction."""
    async with db.write() as conn:
        if not await _claim(conn, row, seen, plan.next_at, None):
            return None
        if not (await conn.execute(_OWNER_ACTIVE, {"owner": row.owner_id})).scalar_one_or_none():
            raise errors.Forbidden("its owner's account is disabled: nothing was queued")
        batch_id = await batches.write_batch_in(conn, db, _request(row), row.owner_id)
        await _write_fire(conn, row.id, plan, batch_id, None)
    return batch_id


async def _record_failure(
    db: Database, row: Any, seen: datetime, plan: schedule_times.Due, reason: str
) -> None:
    """The tick's batch could not be queued: say why on its fire row and go on."""
    log.warning(
        "schedule tick queued nothing", extra={"schedule_id": row.id, "error": reason[:300]}
    )
    try:
        async with db.write() as conn:
            if await _claim(conn, row, seen, plan.next_at, reason):
                await _write_fire(conn, row.id, plan, None, reason)
    except IntegrityError:
        return


async def _claim(
    conn: Conn, row: Any, seen: datetime, next_at: datetime, error: str | None
) -> bool:
    """Move the schedule on from the tick `seen`; False if someone else already did."""
    params = {"s_id": row.id, "seen": seen, "next_at": next_at, "error": error}
    return bool((await conn.execute(_CLAIM, params)).rowcount)


async def _write_fire(
    conn: Conn, schedule_id: int, plan: schedule_times.Due, batch_id: int | None, error: str | None
) -> None:
    await conn.execute(
        insert(ScheduleFire).values(
            schedule_id=schedule_id,
            due_at=plan.fire,
            batch_id=batch_id,
            fired_at=utcnow(),
            missed=plan.missed,
            error=error,
        )
    )


def _request(row: Any) -> BatchCreate:
    """The batch request a tick sends: the schedule's, named after it unless it names itself."""
    stored = dict(row.batch)
    stored.setdefault("name", row.name)
    stored.setdefault("triggered_by", f"schedule {row.name}"[:100])
    return BatchCreate.model_validate(stored)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"its run options are no longer valid: {problem_text(exc.errors()[0])}"
    return str(getattr(exc, "message", exc))
