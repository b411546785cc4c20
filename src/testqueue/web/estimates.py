"""When a pending execution will likely start, from how long recent runs took.

The guess replays the line against the slots: each running execution ends
after the median run time of recent completed runs of its test case (or of
all recent runs when its test case has none yet), never later than its
deadline; each pending one, in line order, takes the first slot to free up
and holds it for its own test case's median. It is a guess for people to
plan by, not a promise: it ignores worker tags, and a paused queue has none.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, literal, select, union_all

from testqueue.database import Conn
from testqueue.models import Execution, as_utc
from testqueue.vocabulary import Status

E = Execution
RECENT_RUNS = 20
RECENT_RUNS_OVERALL = 200


@dataclass(frozen=True)
class Durations:
    """Median run seconds per test case, and over all recent runs as the fallback."""

    by_test_case: dict[int, float]
    overall: float | None

    def expected(self, test_case_id: int | None) -> float | None:
        if test_case_id is not None and test_case_id in self.by_test_case:
            return self.by_test_case[test_case_id]
        return self.overall


def _run_seconds(rows: Iterable[tuple[datetime | None, datetime | None]]) -> list[float]:
    return [
        (as_utc(done) - as_utc(started)).total_seconds()
        for started, done in rows
        if started is not None and done is not None
    ]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


async def recent_durations(conn: Conn, test_case_ids: Iterable[int | None]) -> Durations:
    """Medians from the last runs of each test case, and of all of them.

    One statement: a `LIMIT` over the history index per test case, put together
    with UNION ALL (the recent runs overall under a NULL test case).
    """
    finished = (E.status == Status.COMPLETED, E.started_at.is_not(None))

    def recent(*where: Any, limit: int, case_id: int | None) -> Any:
        last = (
            select(E.started_at, E.completed_at)
            .where(*finished, *where)
            .order_by(E.id.desc())
            .limit(limit)
            .subquery()
        )
        return select(
            literal(case_id, Integer).label("case_id"), last.c.started_at, last.c.completed_at
        )

    wanted = sorted({i for i in test_case_ids if i is not None})
    parts = [recent(limit=RECENT_RUNS_OVERALL, case_id=None)]
    parts += [recent(E.test_case_id == i, limit=RECENT_RUNS, case_id=i) for i in wanted]
    runs: dict[int | None, list[tuple[datetime | None, datetime | None]]] = {}
    for case_id, started, done in await conn.execute(union_all(*parts)):
        runs.setdefault(case_id, []).append((started, done))
    medians = {i: _median(_run_seconds(rows)) for i, rows in runs.items()}
    by_case = {i: m for i, m in medians.items() if i is not None and m is not None}
    return Durations(by_case, medians.get(None))


@dataclass(frozen=True)
class Busy:
    """A running execution as the estimate sees it."""

    started_at: datetime
    expected_s: float | None
    timeout_s: float


def estimate_starts(
    now: datetime, slots: int, running: Sequence[Busy], line: Sequence[float | None]
) -> list[datetime | None]:
    """The likely start of each pending execution, in line order; None once a guess is blind."""
    ends = sorted(_likely_end(now, busy) for busy in running)
    # With more running than slots (the slots were lowered), the first to end
    # free no slot: only the last `slots` endings let a pending one start.
    free = ends[max(0, len(ends) - slots) :] + [now] * max(0, slots - len(ends))
    heapq.heapify(free)
    starts: list[datetime | None] = []
    for expected_s in line:
        if expected_s is None or not free:
            starts.extend([None] * (len(line) - len(starts)))
            break
        start = heapq.heappop(free)
        starts.append(start)
        heapq.heappush(free, start + timedelta(seconds=expected_s))
    return starts


def _likely_end(now: datetime, busy: Busy) -> datetime:
    started = as_utc(busy.started_at)
    deadline = started + timedelta(seconds=busy.timeout_s)
    if busy.expected_s is None:
        return deadline
    return max(now, min(started + timedelta(seconds=busy.expected_s), deadline))
