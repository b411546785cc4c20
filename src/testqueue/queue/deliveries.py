"""Webhook deliveries leaving the outbox: claimed under a lease, each attempt kept.

A worker claims the due deliveries (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
the write lock on SQLite) and leases them for as long as a request may
take; a worker that dies mid-send leaves the lease to run out, and another
worker (or its successor) takes them again, so a `kill -9` loses nothing. A
delivery waits while an earlier one for the same subscription and subject
(an execution, a batch, the queue) is pending, so a receiver hears a run's
events in the order they happened. A failed attempt is tried again after a
delay that doubles (with jitter) until `WEBHOOK_RETRY_FOR` has passed since
the event, and then the delivery is `failed`. Deliveries of a subscription
that is off, or whose owner's account is disabled, wait (they are neither
sent nor failed) until it is on again.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Conn, Database
from testqueue.models import (
    Batch,
    Execution,
    TestCase,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    as_utc,
    utcnow,
)
from testqueue.queue import dialect, outbox
from testqueue.vocabulary import DeliveryState, verdict_of

D = WebhookDelivery
S = WebhookSubscription
A = WebhookAttempt
# A lease outlasts a request by this much: the time to record its outcome.
LEASE_MARGIN_S = 5.0
MAX_RETRY_DELAY_S = 3600.0
ERROR_MAX_CHARS = 500

PENDING = DeliveryState.PENDING
_PENDING = D.state == literal_column(f"'{PENDING.value}'")
_earlier = aliased(D)
# An earlier delivery of the same subject to the same subscription is still pending.
_BLOCKED = exists().where(
    _earlier.subscription_id == D.subscription_id,
    _earlier.subject == D.subject,
    _earlier.state == literal_column(f"'{PENDING.value}'"),
    _earlier.id < D.id,
)
_NOW = bindparam("now", type_=D.next_attempt_at.type)
_FREE = or_(D.leased_until.is_(None), D.leased_until <= _NOW)
_READY_AT = case((D.leased_until > D.next_attempt_at, D.leased_until), else_=D.next_attempt_at)
# Its subscription is on and its owner active: else it waits.
_HEARD = exists().where(S.id == D.subscription_id, outbox.listening())
_NEXT = select(func.min(_READY_AT)).where(_PENDING, ~_BLOCKED, _HEARD)


@dataclass(frozen=True)
class Due:
    """A delivery this worker leased, with what its request needs."""

    id: int
    attempt: int  # this attempt's number
    since: datetime
    url: str
    secret: str
    payload_format: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """How one attempt went."""

    status_code: int | None
    duration_ms: float
    error: str | None = None
    excerpt: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def lease_s(settings: Settings) -> float:
    """How long a claimed delivery is this worker's: its request, then recording it."""
    return settings.webhook_timeout + LEASE_MARGIN_S


def _due_ids(on: dialect.Dialect) -> Any:
    ids = (
        select(D.id)
        .where(_PENDING, D.next_attempt_at <= _NOW, _FREE, ~_BLOCKED, _HEARD)
        .order_by(D.next_attempt_at, D.id)
        .limit(bindparam("limit"))
    )
    return on.among(D.id, on.skip_locked(ids))


async def claim_due(db: Database, limit: int) -> list[Due]:
    """Lease up to `limit` due deliveries whose earlier ones are done, oldest first."""
    now = utcnow()
    on = dialect.of(db)
    lease = timedelta(seconds=lease_s(db.settings))
    async with db.write() as conn:
        claimed = (
            await conn.execute(
                update(D)
                .where(_due_ids(on))
                .values(attempts=D.attempts + 1, leased_until=now + lease)
                .returning(D.id),
                {"now": now, "limit": limit},
            )
        ).all()
        if not claimed:
            return []
        return await _facts(conn, [row.id for row in claimed])


_FACTS = (
    select(
        D.__table__,
        S.url,
        S.secret,
        S.payload_format,
        TestCase.title.label("test_case_title"),
        Batch.name.label("batch_name"),
        Batch.suite_id.label("suite_id"),
        Batch.total.label("batch_total"),
    )
    .join(S, S.id == D.subscription_id)
    .outerjoin(TestCase, TestCase.id == D.test_case_id)
    .outerjoin(Batch, Batch.id == D.batch_id)
    .where(D.id.in_(bindparam("ids", expanding=True)))
    .order_by(D.id)
)
_BATCH_COUNTS = (
    select(Execution.status, Execution.result, func.count().label("n"))
    .where(Execution.batch_id == bindparam("batch_id"))
    .group_by(Execution.status, Execution.result)
)


async def _facts(conn: Conn, ids: list[int]) -> list[Due]:
    rows = (await conn.execute(_FACTS, {"ids": ids})).mappings().all()
    found = []
    for row in rows:
        facts = dict(row)
        if row["event"] == outbox.BATCH_FINISHED:
            facts["batch_counts"] = await _batch_counts(conn, row["batch_id"])
        found.append(
            Due(
                id=row["id"],
                attempt=row["attempts"],
                since=as_utc(row["since"]),
                url=row["url"],
                secret=row["secret"],
                payload_format=row["payload_format"],
                facts=facts,
            )
        )
    return found


async def _batch_counts(conn: Conn, batch_id: int) -> dict[str, Any]:
    """A finished batch's results (they no longer change) and its verdict."""
    results: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    for row in await conn.execute(_BATCH_COUNTS, {"batch_id": batch_id}):
        ended[row.status] += row.n
        if row.result:
            results[row.result] += row.n
    verdict = verdict_of(dict(results), ended["cancelled"], ended["expired"])
    return {
        "results": dict(results),
        "cancelled": ended["cancelled"],
        "expired": ended["expired"],
        "verdict": verdict.value,
    }


async def next_ready(db: Database) -> datetime | None:
    """When the next pending delivery whose earlier ones are done may be sent."""
    async with db.read() as conn:
        found = (await conn.execute(_NEXT)).scalar_one_or_none()
    return as_utc(found) if found is not None else None


def retry_delay_s(attempt: int, base_s: float) -> float:
    """Doubling from `base_s` after each failed attempt (at most an hour), with jitter:
    receivers that came back are not met by every sender at the same instant."""
    delay: float = min(base_s * 2.0 ** (attempt - 1), MAX_RETRY_DELAY_S)
    return delay * random.uniform(0.5, 1.0)


_MINE = and_(D.id == bindparam("d_id"), D.attempts == bindparam("d_attempt"), _PENDING)


async def record_answer(db: Database, due: Due, answer: Answer) -> str:
    """Keep this attempt, and settle the delivery: delivered, tried again later, or failed.

    Only while the lease is still this attempt's (the attempt number guards it):
    a worker that overran its lease keeps the attempt row but changes nothing else.
    Returns the delivery's state.
    """
    now = utcnow()
    settings = db.settings
    values: dict[str, Any] = {
        "leased_until": None,
        "last_status_code": answer.status_code,
        "last_error": answer.error,
    }
    if answer.ok:
        values.update(state=DeliveryState.DELIVERED.value, delivered_at=now)
    else:
        retry_at = now + timedelta(seconds=retry_delay_s(due.attempt, settings.webhook_retry_base))
        if retry_at > due.since + timedelta(seconds=settings.webhook_retry_for):
            values.update(state=DeliveryState.FAILED.value)
        else:
            values.update(next_attempt_at=retry_at)
    async with db.write() as conn:
        await conn.execute(
            insert(A).values(
                delivery_id=due.id,
                number=due.attempt,
                at=now,
                duration_ms=answer.duration_ms,
                status_code=answer.status_code,
                error=answer.error,
                response_excerpt=answer.excerpt,
            )
        )
        await conn.execute(
            update(D).where(_MINE).values(**values), {"d_id": due.id, "d_attempt": due.attempt}
        )
    state = str(values.get("state", PENDING.value))
    if state != PENDING:
        db.wakeups.delivery_event.set()  # a later event of the same subject may go now
    return state


async def send_again(db: Database, delivery_id: int) -> None:
    """Put a delivered or failed delivery back in line, due now, with a fresh retry window."""
    now = utcnow()
    async with db.write() as conn:
        changed = await conn.execute(
            update(D)
            .where(D.id == delivery_id, D.state != PENDING.value)
            .values(state=PENDING.value, next_attempt_at=now, since=now, leased_until=None)
        )
        if changed.rowcount == 0:
            raise errors.InvalidTransition(
                f"delivery {delivery_id} is waiting to be sent already; it goes out when due"
            )
        await dialect.signal(db, conn, outbox.SIGNAL)
    db.wakeups.delivery_event.set()
