"""Taking pending runs to start: as many as the slots, the worker and the policies allow.

Most lines are plain (no waiting run has a concurrency key, one user waits,
nothing has aged, no per-user cap): there the policies' order is the line's
own, `priority, queued_at, id`, and one UPDATE takes the first runs. Otherwise
the line's heads are read (`queue.line`), `queue.policy` chooses, and the
chosen ids are taken. Either way it happens under the claim's lock, so the
running runs counted here cannot change before the UPDATE.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    not_,
    or_,
    select,
)

from testqueue.database import Conn
from testqueue.models import Execution, QueueState, TestCase, utcnow
from testqueue.queue import dialect, line, moves
from testqueue.queue.order import (
    KEYED_WAITING,
    LINE_ORDER,
    MANY_USERS_WAITING,
    OLDEST_WAITING,
    PENDING,
    RUNNING,
    line_filter,
)
from testqueue.queue.policy import NeedMore, Plan, Policies, Waiting
from testqueue.queue.status import slots_in_force
from testqueue.vocabulary import FairShare, Status, decode_tags

if TYPE_CHECKING:
    from testqueue.queue.claim import Claimer

E = Execution
_CASE_VERSION = select(TestCase.updated_at).where(TestCase.id == E.test_case_id).scalar_subquery()


async def take(conn: Conn, dialect_name: str, claimer: Claimer, want: int) -> Sequence[Any]:
    """Move up to `want` pending runs to running for `claimer`, in the order they start."""
    now = utcnow()
    params: dict[str, Any] = {
        "claim_want": want,
        "claim_slots": claimer.default_slots,
        "claim_worker": claimer.worker_id,
        "claim_now": now,
        "claim_lease": now + timedelta(seconds=claimer.lease_ttl_s),
        "claim_aged_before": now - timedelta(seconds=claimer.policies.aging_s),
    }
    plain = _take_plain(claimer.tags, dialect_name, claimer.policies)
    if plain is not None:
        taken = (await conn.execute(plain, params)).all()
        if taken:
            return sorted(taken, key=lambda r: (r.priority, r.queued_at, r.id))
    chosen = await _choose(conn, claimer, want, now)
    if not chosen:
        return []
    taken = (await conn.execute(_take(dialect_name), {**params, "claim_ids": chosen})).all()
    order = {run_id: place for place, run_id in enumerate(chosen)}
    return sorted(taken, key=lambda r: order[r.id])


# Claims read this many runs of each (priority, user) list beyond the free slots, and
# four times more whenever the plan runs out of one (`policy.NeedMore`).
CLAIM_READ_AHEAD = 2
_RETURNING = (
    E.id,
    E.test_case_id,
    E.attempt,
    E.priority,
    E.queued_at,
    E.base_url,
    E.browser,
    E.environment,
    E.retries,
    E.retried,
    E.retry_on,
    _CASE_VERSION.label("case_version"),
)


def _start(where: ColumnElement[bool]) -> Any:
    """UPDATE the pending runs `where` picks to running, RETURNING what a run needs."""
    return moves.move(
        Status.PENDING,
        Status.RUNNING,
        where,
        worker_id=bindparam("claim_worker"),
        started_at=bindparam("claim_now"),
        lease_expires_at=bindparam("claim_lease"),
        dedupe_key=None,  # started: a new run may be queued beside it, even with dedupe
    ).returning(*_RETURNING)


def _plain(policies: Policies) -> ColumnElement[bool] | None:
    """When the policies order the line as (priority, queued_at, id) does: no waiting run
    has a key, no run has aged, and one user waits (or fair share is off). None: never
    (a per-user cap needs the plan)."""
    if policies.user_cap:
        return None
    none: ColumnElement[int] = literal_column("0", type_=Integer)
    holds = [none == KEYED_WAITING]
    if policies.fair_share == FairShare.USER:
        holds.append(none == MANY_USERS_WAITING)
    if policies.aging_s > 0:
        holds.append(bindparam("claim_aged_before", type_=DateTime(True)) < OLDEST_WAITING)
    return and_(*holds)


def _free_slots(plain: ColumnElement[bool]) -> Any:
    """How many to take: 0 while paused or when the line is not `plain`, else
    min(:claim_want, slots - running), not below 0.

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
        (not_(plain), 0),
        (state.c.free < want, state.c.free),
        else_=want,
    )
    return select(amount).scalar_subquery()


@functools.cache
def _take_plain(tags: frozenset[str], dialect_name: str, policies: Policies) -> Any | None:
    """One statement for a plain line: the first free-slots runs in (priority, queued_at,
    id) order, not past their deadline; nothing when the line is not plain."""
    plain = _plain(policies)
    if plain is None:
        return None
    sql = dialect.named(dialect_name)
    candidates = (
        select(E.id)
        .where(
            line_filter(tags),
            or_(E.expires_at.is_(None), E.expires_at > bindparam("claim_now")),
        )
        .order_by(*LINE_ORDER)
        .limit(_free_slots(plain))
    )
    return _start(sql.among(E.id, sql.skip_locked(candidates)))


@functools.cache
def _take(dialect_name: str) -> Any:
    """UPDATE ... WHERE id IN (the runs chosen, still pending) RETURNING what a run needs."""
    sql = dialect.named(dialect_name)
    chosen = select(E.id).where(E.id.in_(bindparam("claim_ids", expanding=True)), PENDING)
    return _start(sql.among(E.id, sql.skip_locked(chosen)))


async def _choose(conn: Conn, claimer: Claimer, want: int, now: datetime) -> list[int]:
    """The runs to start now: as many as the slots, the worker and the policies allow.

    Read and chosen under the claim's lock, so the running runs counted here
    (for the slots, each user's cap and each key's limit) cannot change before
    the UPDATE: two workers never both take the last place.
    """
    tags = claimer.tags

    def usable(run: Waiting) -> bool:
        if run.expires_at is not None and run.expires_at <= now:
            return False  # expiring: `expiry` ends it
        needed = run.required_tags
        return not needed or set(decode_tags(needed)) <= tags

    # No more can start than the slots: read that far (the plan asks for more if not enough).
    k = min(want, claimer.default_slots) + CLAIM_READ_AHEAD
    while True:
        read = await line.read_line(conn, k, claimer.default_slots)
        free = min(want, read.slots - len(read.running))
        if read.paused or free <= 0:
            return []
        plan = Plan(claimer.policies, read.lists, read.running, read.truncated, usable)
        try:
            return [run.id for run in plan.take(now, free)]
        except NeedMore:
            k *= 4
