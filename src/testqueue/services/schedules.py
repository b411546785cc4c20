"""Schedules: a batch request queued on a cron expression in a time zone, owned by its maker.

A member makes, reads and changes their own schedules and may schedule only
what they may run (a suite and test cases that exist); admins see and change
all. Each tick queues its batch as the owner. `next_fire_at` is the tick the
schedulers wait for, NULL while paused; every change to it commits with a
signal (`SCHEDULES_SIGNAL`), so every host's scheduler reads it again at
once. Firing a tick is `services.schedule_fires`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select, update

from testqueue import audit, errors, schedule_times
from testqueue.database import Conn, Database
from testqueue.models import Schedule, ScheduleFire, User, as_utc, utcnow
from testqueue.queue import dialect
from testqueue.schemas.batches import BatchCreate
from testqueue.schemas.common import problem_text
from testqueue.schemas.schedules import (
    FireTime,
    ScheduleCreate,
    ScheduleFields,
    ScheduleFirePublic,
    SchedulePage,
    SchedulePublic,
    ScheduleUpdate,
)
from testqueue.services import batches, suites
from testqueue.services.accounts import Actor

S = Schedule
F = ScheduleFire
SCHEDULES_SIGNAL = "schedules"
NEXT_TIMES = 5
LAST_FIRES = 5


async def create_schedule(db: Database, body: ScheduleCreate, actor: Actor) -> SchedulePublic:
    """Save a schedule of `actor`'s; its first tick is the first after now."""
    await check_run(db, body.run)
    now = utcnow()
    check_often(db, body, now)
    next_at = None if body.paused else _first_tick(body, now)
    async with db.write() as conn:
        schedule_id = (
            await conn.execute(
                insert(S)
                .values(
                    **_columns(body),
                    owner_id=actor.id,
                    paused=body.paused,
                    next_fire_at=next_at,
                    created_at=now,
                    updated_at=now,
                )
                .returning(S.id)
            )
        ).scalar_one()
        await _signal(db, conn)
    _woken(db)
    return await read_schedule(db, schedule_id, actor)


def check_often(db: Database, body: ScheduleFields, now: datetime) -> None:
    """A schedule fires at most once every SCHEDULE_MIN_INTERVAL: a batch a second is a flood."""
    least = db.settings.schedule_min_interval
    gap = schedule_times.shortest_gap_s(body.cron, body.timezone, now)
    if gap < least:
        raise errors.InvalidInput(
            f"cron {body.cron!r} fires every {gap:g} s; a schedule may fire at most once "
            f"every {least:g} s (SCHEDULE_MIN_INTERVAL)"
        )


async def check_run(db: Database, run: BatchCreate) -> None:
    """What a schedule would run exists now: its suite and its test cases (NotFound if not)."""
    async with db.read() as conn:
        if run.suite_id is not None:
            await suites.read_suite_in(conn, run.suite_id)
        await suites.selection_in(conn, run.test_case_ids, (), run.tag_mode)


async def list_schedules(db: Database, actor: Actor, limit: int, offset: int) -> SchedulePage:
    """Schedules by name: a member's own, or every one for an admin."""
    mine = [S.owner_id == actor.id] if not actor.is_admin else []
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(S).where(*mine))).scalar_one()
        rows = (
            await conn.execute(
                select(S.__table__).where(*mine).order_by(S.name, S.id).limit(limit).offset(offset)
            )
        ).mappings()
        items = await _public(conn, list(rows))
    return SchedulePage(items=items, total=total, limit=limit, offset=offset)


async def read_schedule(db: Database, schedule_id: int, actor: Actor) -> SchedulePublic:
    async with db.read() as conn:
        row = await _load(conn, schedule_id)
        _may_see(row, actor)
        (public,) = await _public(conn, [row])
    return public


async def update_schedule(
    db: Database, schedule_id: int, changes: ScheduleUpdate, actor: Actor
) -> SchedulePublic:
    """Change the fields given; a new cron or zone starts from the first tick after now."""
    given = changes.model_dump(exclude_unset=True)
    async with db.read() as conn:
        current = await _load(conn, schedule_id)
    _may_see(current, actor)
    body = _merged(current, given)
    if "run" in given:
        await check_run(db, body.run)
    values: dict[str, Any] = {**_columns(body), "updated_at": utcnow()}
    retimed = (body.cron, body.timezone) != (current["cron"], current["timezone"])
    if retimed:
        check_often(db, body, utcnow())
    if retimed and not current["paused"]:
        values["next_fire_at"] = _first_tick(body, utcnow())
    await _change(db, current, actor, "schedule.update", values)
    return await read_schedule(db, schedule_id, actor)


async def pause_schedule(db: Database, schedule_id: int, actor: Actor) -> SchedulePublic:
    """Stop firing until resumed."""
    return await _set_paused(db, schedule_id, actor, paused=True)


async def resume_schedule(db: Database, schedule_id: int, actor: Actor) -> SchedulePublic:
    """Fire again from the first tick after now: ticks passed while paused never fire."""
    return await _set_paused(db, schedule_id, actor, paused=False)


async def _set_paused(
    db: Database, schedule_id: int, actor: Actor, *, paused: bool
) -> SchedulePublic:
    async with db.read() as conn:
        current = await _load(conn, schedule_id)
    _may_see(current, actor)
    if current["paused"] == paused:
        state = "paused already" if paused else "not paused"
        raise errors.InvalidTransition(f"schedule {schedule_id} is {state}")
    now = utcnow()
    cron, zone = current["cron"], current["timezone"]
    next_at = None if paused else schedule_times.next_tick(cron, zone, now)
    values = {"paused": paused, "next_fire_at": next_at, "updated_at": now}
    action = "schedule.pause" if paused else "schedule.resume"
    await _change(db, current, actor, action, values)
    return await read_schedule(db, schedule_id, actor)


async def delete_schedule(db: Database, schedule_id: int, actor: Actor) -> None:
    """Delete a schedule and its record of ticks; the batches it queued stay."""
    async with db.write() as conn:
        current = await _load(conn, schedule_id)
        _may_see(current, actor)
        await conn.execute(delete(S).where(S.id == schedule_id))
        await audit.write(conn, _note(current, actor, "schedule.delete"))
        await _signal(db, conn)
    _woken(db)


def may_edit(schedule: SchedulePublic, actor: Actor) -> bool:
    return actor.is_admin or schedule.owner_id == actor.id


async def _change(
    db: Database, current: Any, actor: Actor, action: str, values: dict[str, Any]
) -> None:
    """Write `values` if the row is still as read (else 409: someone changed it meanwhile)."""
    async with db.write() as conn:
        changed = await conn.execute(
            update(S)
            .where(S.id == current["id"], S.updated_at == current["updated_at"])
            .values(**values)
        )
        if changed.rowcount == 0:
            raise errors.InvalidTransition(
                f"schedule {current['id']} was changed or deleted meanwhile: read it again"
            )
        await audit.write(conn, _note(current, actor, action))
        await _signal(db, conn)
    _woken(db)


async def _signal(db: Database, conn: Conn) -> None:
    """Other hosts' schedulers read the next tick again once this commits."""
    await dialect.signal(db, conn, SCHEDULES_SIGNAL)


def _woken(db: Database) -> None:
    db.wakeups.schedules_event.set()


def _note(row: Any, actor: Actor, action: str) -> audit.Note | None:
    if row["owner_id"] == actor.id:
        return None
    return actor.note(action, f"schedule {row['id']}", name=row["name"])


def _first_tick(body: ScheduleFields, now: datetime) -> datetime:
    return schedule_times.next_tick(body.cron, body.timezone, now)


def _merged(current: Any, given: dict[str, Any]) -> ScheduleFields:
    """The schedule as it would be with `given` applied, checked whole."""
    kept = {name: current[name] for name in ("name", "cron", "timezone", "catch_up")}
    try:
        return ScheduleFields.model_validate({**kept, "run": current["batch"], **given})
    except ValidationError as exc:
        raise errors.InvalidInput(problem_text(exc.errors()[0])) from exc


def _columns(body: ScheduleFields) -> dict[str, Any]:
    return {
        "name": body.name,
        "cron": body.cron,
        "timezone": body.timezone,
        "catch_up": body.catch_up.value,
        "batch": body.run.model_dump(mode="json", exclude_defaults=True),
    }


async def _load(conn: Conn, schedule_id: int) -> Any:
    found = await conn.execute(select(S.__table__).where(S.id == schedule_id))
    row = found.mappings().one_or_none()
    if row is None:
        raise errors.NotFound(f"schedule {schedule_id} does not exist")
    return row


def _may_see(row: Any, actor: Actor) -> None:
    if not (actor.is_admin or row["owner_id"] == actor.id):
        raise errors.Forbidden(f"schedule {row['id']} belongs to another user")


async def _public(conn: Conn, rows: Sequence[Any]) -> list[SchedulePublic]:
    """Schedules as the API shows them: the next ticks, and the last ones with their batches."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    owner_ids = {row["owner_id"] for row in rows}
    found = await conn.execute(select(User.id, User.username).where(User.id.in_(owner_ids)))
    owners: dict[int, str] = {user_id: name for user_id, name in found}
    fires = await _last_fires(conn, ids)
    summaries = await batches.summaries_of(conn, (f.batch_id for f in fires if f.batch_id))
    now = utcnow()
    return [
        SchedulePublic(
            id=row["id"],
            name=row["name"],
            owner_id=row["owner_id"],
            owner=owners.get(row["owner_id"]),
            cron=row["cron"],
            timezone=row["timezone"],
            catch_up=row["catch_up"],
            run=BatchCreate.model_validate(row["batch"]),
            paused=row["paused"],
            next_fire_at=_utc(row["next_fire_at"]),
            next_fire_times=[] if row["paused"] else fire_times(row["cron"], row["timezone"], now),
            last_error=row["last_error"],
            last_fires=[_fire(f, summaries) for f in fires if f.schedule_id == row["id"]],
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
        )
        for row in rows
    ]


def fire_times(cron: str, zone: str, after: datetime) -> list[FireTime]:
    """The next ticks after `after`, in UTC and as the schedule's zone shows them."""
    return [
        FireTime(utc=tick, local=schedule_times.local(tick, zone).isoformat())
        for tick in schedule_times.ticks_after(cron, zone, after, NEXT_TIMES)
    ]


async def _last_fires(conn: Conn, schedule_ids: list[int]) -> list[Any]:
    """The latest LAST_FIRES ticks of each schedule, newest first, in one statement."""
    place = func.row_number().over(partition_by=F.schedule_id, order_by=F.due_at.desc()).label("n")
    ranked = select(F.__table__, place).where(F.schedule_id.in_(schedule_ids)).subquery()
    found = await conn.execute(
        select(ranked).where(ranked.c.n <= LAST_FIRES).order_by(ranked.c.due_at.desc())
    )
    return list(found.all())


def _fire(row: Any, summaries: dict[int, Any]) -> ScheduleFirePublic:
    return ScheduleFirePublic(
        due_at=as_utc(row.due_at),
        fired_at=as_utc(row.fired_at),
        missed=row.missed,
        batch_id=row.batch_id,
        error=row.error,
        batch=summaries.get(row.batch_id) if row.batch_id else None,
    )


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
