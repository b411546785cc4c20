"""The webhook outbox: a delivery row per subscription per event, written in the
transaction of the change it reports.

A change that commits has its deliveries committed with it, and a change
that rolls back takes them along: no event is lost by a crash and none is
sent for what never happened. Each write is one `INSERT ... SELECT` from the
matching subscriptions, copying the run's lifecycle facts as they are at
that moment; the event is read off the row's new status.

These writes sit in the queue's hottest transactions, so a process keeps
the events any subscription wants (`Wakeups.webhook_events`) and writes
nothing for an event nobody wants. What it keeps is read again (one small
read, in the transaction at hand) once it is `FRESH_S` old, at once when
this process changes a subscription, and when another host says so
(`CHANGED_SIGNAL`, PostgreSQL's NOTIFY): a new subscription hears other
processes' events within `FRESH_S`.

Only a subscription that is on, of an owner whose account is active, hears
anything. A batch's `batch.finished` is written by the transaction that
ends its last run: each such transaction first locks the batches of the
runs it ended, so of two that end a batch's last two runs at once, the
later one sees the other's commit (PostgreSQL reads each statement afresh;
SQLite has one writer). A unique index keeps it to one per subscription.
Runs moved to a final status go through `end_runs`, which records them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    exists,
    insert,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import Insert, Update

from testqueue.database import Conn, Database
from testqueue.models import (
    Batch,
    Execution,
    TestCase,
    User,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from testqueue.queue import dialect
from testqueue.vocabulary import DeliveryState, Role, Status, WebhookEvent, decode_tags

E = Execution
S = WebhookSubscription
D = WebhookDelivery

QUEUED = WebhookEvent.QUEUED
STARTED = WebhookEvent.STARTED
FINISHED = WebhookEvent.FINISHED
EXPIRED = WebhookEvent.EXPIRED
CANCELLED = WebhookEvent.CANCELLED
BATCH_FINISHED = WebhookEvent.BATCH_FINISHED
PAUSED = WebhookEvent.PAUSED
RESUMED = WebhookEvent.RESUMED
EXECUTION_EVENTS = (QUEUED, STARTED, FINISHED, EXPIRED, CANCELLED)
QUEUE_EVENTS = (PAUSED, RESUMED)
EVENTS = (*EXECUTION_EVENTS, BATCH_FINISHED, *QUEUE_EVENTS)
ENDED = (FINISHED, EXPIRED, CANCELLED)
# A run's event is its new status.
EVENT_OF_STATUS = {
    Status.PENDING: QUEUED,
    Status.RUNNING: STARTED,
    Status.COMPLETED: FINISHED,
    Status.EXPIRED: EXPIRED,
    Status.CANCELLED: CANCELLED,
}
# NOTIFY payloads: deliveries were written; subscriptions changed.
SIGNAL_PREFIX = "webhook:"
SIGNAL = "webhook:due"
CHANGED_SIGNAL = "webhook:subscriptions"
FRESH_S = 1.0

_WANTED = select(S.events).where(S.active.is_(True)).distinct()
# INSERT ... ON CONFLICT DO NOTHING: a second batch.finished for a subscription is dropped.
_INSERT: dict[str, Callable[[Any], Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}
# Ids recorded per statement, within every database's limit of parameters.
CHUNK = 1000


def forget(db: Database) -> None:
    """Subscriptions changed: read the events wanted again before the next write.

    A new object each time: a read begun before it is not kept (`_read_wanted`).
    """
    db.wakeups.webhook_events = (-math.inf, frozenset())


def heard(db: Database, payload: str) -> None:
    """What another host announced about webhooks."""
    if payload == CHANGED_SIGNAL:
        forget(db)
    else:
        db.wakeups.delivery_event.set()


def _kept(db: Database) -> frozenset[str] | None:
    kept = db.wakeups.webhook_events
    if kept is None or time.monotonic() - kept[0] >= FRESH_S:
        return None
    return kept[1]


async def _read_wanted(conn: Conn, db: Database) -> frozenset[str]:
    before = db.wakeups.webhook_events
    read_at = time.monotonic()
    rows = (await conn.execute(_WANTED)).scalars().all()
    wanted = frozenset(event for fenced in rows for event in decode_tags(fenced))
    if db.wakeups.webhook_events is before:  # else a change was heard meanwhile
        db.wakeups.webhook_events = (read_at, wanted)
    return wanted


async def _wanted(conn: Conn, db: Database) -> frozenset[str]:
    kept = _kept(db)
    return kept if kept is not None else await _read_wanted(conn, db)


async def wants(db: Database, events: Iterable[str]) -> bool:
    """Whether a subscription may want any of `events`: outside a transaction, for a
    caller that chooses its kind of transaction by it (a single enqueue)."""
    kept = _kept(db)
    if kept is None:
        async with db.read() as conn:
            kept = await _read_wanted(conn, db)
    return not kept.isdisjoint(events)


def _owner_is_admin() -> ColumnElement[bool]:
    return exists().where(User.id == S.user_id, User.role == Role.ADMIN.value)


def listening() -> ColumnElement[bool]:
    """The subscription is on and its owner's account is active (a disabled one hears
    nothing)."""
    return and_(
        S.active.is_(True),
        exists().where(User.id == S.user_id, User.is_active.is_(True)),
    )


def _fenced(value: Any) -> ColumnElement[str]:
    fenced: ColumnElement[str] = literal(",") + value + literal(",")
    return fenced


def _hears_run() -> ColumnElement[bool]:
    """A subscription hears this run: its owner's, or any for an admin's; its filters."""
    e = E
    return and_(
        listening(),
        or_(S.user_id == e.user_id, and_(S.own_runs_only.is_(False), _owner_is_admin())),
        or_(S.test_case_id.is_(None), S.test_case_id == e.test_case_id),
        or_(
            S.suite_id.is_(None),
            exists().where(Batch.id == e.batch_id, Batch.suite_id == S.suite_id),
        ),
        or_(
            S.tag.is_(None),
            exists().where(TestCase.id == e.test_case_id, TestCase.tags.contains(_fenced(S.tag))),
        ),
    )


_EVENT = case(
    *((E.status == status.value, literal(event)) for status, event in EVENT_OF_STATUS.items()),
    else_=literal(FINISHED),
)
_COLUMNS = [
    "subscription_id",
    "event",
    "subject",
    "execution_id",
    "batch_id",
    "test_case_id",
    "user_id",
    "status",
    "result",
    "attempt",
    "priority",
    "occurred_at",
    "state",
    "attempts",
    "next_attempt_at",
    "since",
]


def _runs_statement(where: ColumnElement[bool], now: datetime) -> Insert:
    source = (
        select(
            S.id,
            _EVENT,
            literal("execution:") + cast(E.id, String),
            E.id,
            E.batch_id,
            E.test_case_id,
            E.user_id,
            E.status,
            E.result,
            E.attempt,
            E.priority,
            literal(now, D.occurred_at.type),
            literal(DeliveryState.PENDING.value),
            literal(0),
            literal(now, D.next_attempt_at.type),
            literal(now, D.since.type),
        )
        .select_from(S.__table__.join(E.__table__, where))
        .where(_hears_run(), S.events.contains(_fenced(_EVENT)))
        .order_by(E.id, S.id)
    )
    return insert(D).from_select(_COLUMNS, source)


def _ended_batches(where: ColumnElement[bool]) -> Any:
    return select(E.batch_id).where(where, E.batch_id.is_not(None)).distinct()


def _lock_batches(where: ColumnElement[bool]) -> Any:
    """Lock the batches of the runs `where` picks, in id order (no deadlock between two
    such locks): of two transactions ending a batch's runs, the later waits here
    for the earlier to commit, and then sees its runs ended."""
    return (
        select(Batch.id)
        .where(Batch.id.in_(_ended_batches(where).scalar_subquery()))
        .order_by(Batch.id)
        .with_for_update(of=Batch.__table__)
    )


def _batches_statement(dialect_name: str, where: ColumnElement[bool], now: datetime) -> Insert:
    """batch.finished for the batches of the runs `where` picks that have no run left."""
    left = aliased(E)
    ended = _ended_batches(where)
    source = (
        select(
            S.id,
            literal(BATCH_FINISHED),
            literal("batch:") + cast(Batch.id, String),
            null(),
            Batch.id,
            null(),
            Batch.user_id,
            null(),
            null(),
            null(),
            null(),
            literal(now, D.occurred_at.type),
            literal(DeliveryState.PENDING.value),
            literal(0),
            literal(now, D.next_attempt_at.type),
            literal(now, D.since.type),
        )
        .select_from(S.__table__.join(Batch.__table__, Batch.id.in_(ended.scalar_subquery())))
        .where(
            listening(),
            S.events.contains(f",{BATCH_FINISHED},"),
            S.test_case_id.is_(None),
            S.tag.is_(None),
            or_(S.suite_id.is_(None), S.suite_id == Batch.suite_id),
            or_(S.user_id == Batch.user_id, and_(S.own_runs_only.is_(False), _owner_is_admin())),
            ~exists().where(
                left.batch_id == Batch.id,
                left.status.in_([Status.PENDING.value, Status.RUNNING.value]),
            ),
            ~exists().where(
                D.subscription_id == S.id, D.batch_id == Batch.id, D.event == BATCH_FINISHED
            ),
        )
    )
    # The unique index `ux_webhook_deliveries_batch_finished` is the backstop.
    statement: Insert = (
        _INSERT[dialect_name](D).from_select(_COLUMNS, source).on_conflict_do_nothing()
    )
    return statement


def _queue_statement(event: str, now: datetime) -> Insert:
    source = select(
        S.id,
        literal(event),
        literal("queue"),
        *(null() for _ in range(8)),
        literal(now, D.occurred_at.type),
        literal(DeliveryState.PENDING.value),
        literal(0),
        literal(now, D.next_attempt_at.type),
        literal(now, D.since.type),
    ).where(
        listening(),
        S.events.contains(f",{event},"),
        S.own_runs_only.is_(False),
        _owner_is_admin(),
    )
    return insert(D).from_select(_COLUMNS, source)


async def record_runs(
    conn: Conn,
    db: Database,
    where: Callable[[], ColumnElement[bool]],
    events: Iterable[str],
    *,
    batches: bool = False,
) -> None:
    """Deliveries for the runs `where()` picks, each for the event its new status says.

    `events` are the ones these runs may report: when no subscription wants
    one, nothing is written, read or even built. `batches`: the runs ended,
    so their batches may have finished.
    """
    wanted = await _wanted(conn, db)
    runs = not wanted.isdisjoint(events)
    batch = batches and BATCH_FINISHED in wanted
    if not (runs or batch):
        return
    now = utcnow()
    picked = where()
    written = 0
    if runs:
        written += (await conn.execute(_runs_statement(picked, now))).rowcount
    if batch:
        if conn.dialect.name == "postgresql":  # SQLite has one writer at a time
            await conn.execute(_lock_batches(picked))
        statement = _batches_statement(conn.dialect.name, picked, now)
        written += (await conn.execute(statement)).rowcount
    if written:
        await _announce(conn, db)


async def record_queue(conn: Conn, db: Database, event: str) -> None:
    """A delivery of `queue.paused` or `queue.resumed` for each admin subscription to it."""
    if event not in await _wanted(conn, db):
        return
    if (await conn.execute(_queue_statement(event, utcnow()))).rowcount:
        await _announce(conn, db)


async def _announce(conn: Conn, db: Database) -> None:
    # Set now, the loop's claim waits for this transaction's write lock on SQLite;
    # other hosts (and this one, on PostgreSQL) hear the NOTIFY at commit.
    db.wakeups.delivery_event.set()
    await dialect.signal(db, conn, SIGNAL)


async def end_runs(conn: Conn, db: Database, move: Update, events: Iterable[str]) -> int:
    """Run `move` (a `moves` statement taking runs to a final status) and record what
    it ended: each run's event, and `batch.finished` for a batch it ended last.

    Returns how many runs moved. When no subscription wants any of it, the move
    runs alone; else it returns the ids it moved, recorded `CHUNK` at a time.
    """
    events = list(events)
    wanted = await _wanted(conn, db)
    if wanted.isdisjoint([*events, BATCH_FINISHED]):
        return int((await conn.execute(move)).rowcount)
    ids = [row.id for row in await conn.execute(move.returning(E.id))]
    await record_ids(conn, db, ids, events)
    return len(ids)


async def record_ids(conn: Conn, db: Database, ids: list[int], events: Iterable[str]) -> None:
    """Deliveries for the runs `ids`, which ended (`end_runs`, a recovery)."""
    events = list(events)
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        await record_runs(conn, db, functools.partial(E.id.in_, part), events, batches=True)
