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
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    func,
    literal,
    select,
)

from testqueue.database import Conn, Database
from testqueue.models import Execution, QueueState, TestCase, utcnow
from testqueue.queue import dialect, moves, outbox, retries, take
from testqueue.queue.order import (
    PENDING,
    RUNNING,
)
from testqueue.queue.policy import Policies
from testqueue.queue.progress import save_progress, storable
from testqueue.queue.status import slots_in_force
from testqueue.vocabulary import Progress, Result, Status

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
                ended_at = utcnow()
                await _record_finished(conn, claimer.worker_id, ending, ended_at)
                await outbox.record_runs(
                    conn, db, lambda: _ended(ending, ended_at), outbox.ENDED, batches=True
                )
        claimed = await _claim(db, conn, claimer, want, cases or CaseCache(0)) if want > 0 else []
        if claimed:
            await outbox.record_runs(
                conn, db, lambda: E.id.in_([c.id for c in claimed]), [outbox.STARTED]
            )
        if finished:
            await dialect.signal(db, conn, f"freed:{claimer.worker_id}")
        elif claimed:
            await dialect.signal(db, conn, dialect.BOARD_SIGNAL)
    if finished or claimed:
        db.wakeups.changed()
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


def _ended(finished: Sequence[Finished], now: datetime) -> ColumnElement[bool]:
    """The runs this pass ended (not those another worker had ended before)."""
    return and_(E.id.in_([f.id for f in finished]), E.completed_at == now)


async def _record_finished(
    conn: Conn, worker_id: str, finished: Sequence[Finished], now: datetime
) -> None:
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


async def _claim(
    db: Database, conn: Conn, claimer: Claimer, want: int, cases: CaseCache
) -> list[Claimed]:
    """Take what fits (`queue.take`), with each run's test case."""
    taken = await take.take(conn, dialect.of(db).name, claimer, want)
    if not taken:
        return []
    rows = await _cases_of(conn, taken, cases)
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
