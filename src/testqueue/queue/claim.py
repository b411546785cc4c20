"""The dispatcher's pass: record what finished and claim what fits, in one transaction.

Finishing and claiming together means a freed slot is refilled in the same
commit that frees it. The free slots are counted inside the claim's own
statement, under the claim's lock (`Dialect.claiming`), so two workers can
never both take the last one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
)

from testqueue.database import Conn, Database
from testqueue.models import Execution, QueueState, TestCase, utcnow
from testqueue.queue import dialect, line, moves, retries
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
from testqueue.queue.progress import save_progress, storable
from testqueue.queue.status import slots_in_force
from testqueue.vocabulary import FairShare, Progress, Result, Status, decode_tags

E = Execution


@dataclass(frozen=True)
class CaseSpec:
    """What a worker needs of a claimed run's test case."""

    id: int
    runner: str
    command: list[str] | None
    steps: list[Any]
    test_data: dict[str, Any]
    timeout_seconds: float | None
    updated_at: datetime


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
    case: CaseSpec | None  # None when the test case was deleted
    queued_at: datetime | None = None
    retries: int = 0
    retried: int = 0
    retry_on: str = ""

    def ended(
        self,
        result: Result | None,
        exit_code: int | None,
        error_message: str | None,
        steps: tuple[int, int, int, int] = (0, 0, 0, 0),
        progress: Progress | None = None,
    ) -> Finished:
        """How this run ended, ready to record: tried again when its retries say so."""
        return Finished(
            id=self.id,
            attempt=self.attempt,
            result=result,
            exit_code=exit_code,
            error_message=error_message,
            steps=steps,
            progress=progress,
            priority=self.priority,
            queued_at=self.queued_at,
            retry=retries.wants_retry(result, self.retries, self.retried, self.retry_on),
        )


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
    priority: int = 0
    queued_at: datetime | None = None
    retry: bool = False  # back in line as the next attempt instead of completing


@dataclass(frozen=True)
class Claimer:
    """Who claims, how much it may take, and the global slots if no admin changed them."""

    worker_id: str
    default_slots: int
    lease_ttl_s: float
    capacity: int
    tags: frozenset[str] = frozenset()
    policies: Policies = field(default_factory=Policies)


class CaseCache:
    """Test case rows one worker has read, used again while their `updated_at` is unchanged.

    Each claimed run says when its test case last changed, so a worker reads
    a test case again only when it changed: one statement fewer between a
    wake-up and a run's start. This holds because every change of a test
    case sets `updated_at` (`services.test_cases` is the only writer).
    """

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._rows: dict[int, CaseSpec] = {}

    def known(self, versions: Mapping[int, datetime]) -> tuple[dict[int, CaseSpec], set[int]]:
        """The kept rows still current, and the ids that must be read."""
        rows = self._rows
        stale = {i for i, v in versions.items() if i not in rows or rows[i].updated_at != v}
        return {i: rows[i] for i in versions if i not in stale}, stale

    def keep(self, rows: Sequence[CaseSpec]) -> None:
        if len(self._rows) + len(rows) > self._size:
            self._rows.clear()
        self._rows.update((row.id, row) for row in rows)


async def settle(
    db: Database,
    claimer: Claimer,
    finished: Sequence[Finished],
    want: int,
    cases: CaseCache | None = None,
) -> list[Claimed]:
    """Record finished runs and claim up to `want` more, in one transaction.

    A wake-up with nothing to record takes the claim lock only if a slot
    looks free and something waits (`_worth_claiming`, on PostgreSQL): many
    workers woken by one NOTIFY then queue on the lock only when there is work.
    """
    if not finished and want <= 0:
        return []
    worth = None if finished else _worth_claiming(claimer.default_slots)
    async with dialect.of(db).claiming(db, worth) as conn:
        if conn is None:
            return []
        if finished:
            await save_progress(conn, [f.progress for f in finished if f.progress])
            tried_again = await retries.retry(
                conn, claimer.worker_id, [f for f in finished if f.retry and f.queued_at]
            )
            ending = [f for f in finished if f.id not in tried_again]
            if ending:
                await _record_finished(conn, claimer.worker_id, ending)
        claimed = await _claim(db, conn, claimer, want, cases or CaseCache(0)) if want > 0 else []
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


_FINISH = moves.move_either(
    Status.RUNNING,
    [(E.cancel_requested.is_(True), Status.CANCELLED)],
    Status.COMPLETED,
    E.id == bindparam("f_id"),
    # The attempt guards against a lease lost and the run claimed again meanwhile.
    E.attempt == bindparam("f_attempt"),
    E.worker_id == bindparam("f_worker"),
    result=case((E.cancel_requested, None), else_=bindparam("f_result", type_=E.result.type)),
    # A pass after a retry is a pass, and flaky.
    flaky=and_(E.retried > 0, bindparam("f_result", type_=E.result.type) == literal("pass")),
    exit_code=bindparam("f_exit_code"),
    error_message=bindparam("f_error"),
    completed_at=bindparam("f_now"),
    lease_expires_at=None,
    total_steps=bindparam("f_total"),
    passed_steps=bindparam("f_passed"),
    failed_steps=bindparam("f_failed"),
    skipped_steps=bindparam("f_skipped"),
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
                "f_error": storable(f.error_message),
                "f_total": f.steps[0],
                "f_passed": f.steps[1],
                "f_failed": f.steps[2],
                "f_skipped": f.steps[3],
            }
            for f in finished
        ],
    )


# The claim's statements are built once: building them costs more than running them.
_CASES = select(*(TestCase.__table__.c[name] for name in CaseSpec.__dataclass_fields__)).where(
    TestCase.id.in_(bindparam("case_ids", expanding=True))
)
_CASE_VERSION = select(TestCase.updated_at).where(TestCase.id == E.test_case_id).scalar_subquery()


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


async def _claim(
    db: Database, conn: Conn, claimer: Claimer, want: int, cases: CaseCache
) -> list[Claimed]:
    """The plain line's one statement first; the plan when the policies may reorder."""
    now = utcnow()
    params: dict[str, Any] = {
        "claim_want": want,
        "claim_slots": claimer.default_slots,
        "claim_worker": claimer.worker_id,
        "claim_now": now,
        "claim_lease": now + timedelta(seconds=claimer.lease_ttl_s),
        "claim_aged_before": now - timedelta(seconds=claimer.policies.aging_s),
    }
    name = dialect.of(db).name
    taken: Sequence[Any] = []
    plain = _take_plain(claimer.tags, name, claimer.policies)
    if plain is not None:
        taken = (await conn.execute(plain, params)).all()
    chosen: list[int] = []
    if not taken:
        chosen = await _choose(conn, claimer, want, now)
        if chosen:
            taken = (await conn.execute(_take(name), {**params, "claim_ids": chosen})).all()
    if not taken:
        return []
    rows = await _cases_of(conn, taken, cases)
    order = {run_id: place for place, run_id in enumerate(chosen)}
    taken = sorted(taken, key=lambda r: (order.get(r.id, 0), r.priority, r.queued_at, r.id))
    return [
        Claimed(
            id=r.id,
            test_case_id=r.test_case_id,
            attempt=r.attempt,
            priority=r.priority,
            base_url=r.base_url,
            browser=r.browser,
            environment=r.environment,
            case=rows.get(r.test_case_id),
            queued_at=r.queued_at,
            retries=r.retries,
            retried=r.retried,
            retry_on=r.retry_on,
        )
        for r in taken
    ]


async def _cases_of(conn: Conn, taken: Sequence[Any], cases: CaseCache) -> dict[int, CaseSpec]:
    """The test cases of claimed runs: kept ones while unchanged, the rest read now."""
    versions = {r.test_case_id: r.case_version for r in taken if r.case_version is not None}
    found, stale = cases.known(versions)
    if stale:
        rows = await conn.execute(_CASES, {"case_ids": list(stale)})
        read = [CaseSpec(**row) for row in rows.mappings()]
        found.update((case.id, case) for case in read)
        cases.keep(read)
    return found
