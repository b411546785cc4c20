"""How long runs of each test case take: the median of its last 20 that ended with a result.

`queue.status` replays the slots with these (`policy.simulate`) to tell when a
pending run will likely start and end. A test case with no history of its own
has no estimate; the replay still needs a length for it, and takes the median
of all recent runs (`Durations.assumed`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, literal, select, union_all

from testqueue.database import Conn
from testqueue.models import Execution, as_utc
from testqueue.vocabulary import Result

E = Execution
RECENT_RUNS = 20
RECENT_RUNS_OVERALL = 200
UNKNOWN_RUN_S = 60.0


@dataclass(frozen=True)
class Durations:
    """Median run seconds per test case, and over all recent runs as the fallback."""

    by_test_case: dict[int, float]
    overall: float | None

    def own(self, test_case_id: int | None) -> float | None:
        """The median of this test case's own runs; None without history."""
        return None if test_case_id is None else self.by_test_case.get(test_case_id)

    def assumed(self, test_case_id: int | None) -> float:
        """A length to replay the slots with: its own median, else everyone's, else a minute."""
        own = self.own(test_case_id)
        if own is not None:
            return own
        return self.overall if self.overall is not None else UNKNOWN_RUN_S


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
    # Runs that passed or failed ran their course; an error or a timeout says less of it.
    finished = (E.result.in_((Result.PASS, Result.FAIL)), E.started_at.is_not(None))

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


def likely_end(
    now: datetime, started: datetime, expected_s: float | None, timeout_s: float
) -> datetime:
    """When a running run will likely end: its median after its start, never past its
    deadline, never before now (it has not ended yet)."""
    started = as_utc(started)
    deadline = started + timedelta(seconds=timeout_s)
    if expected_s is None:
        return max(now, deadline)
    return max(now, min(started + timedelta(seconds=expected_s), deadline))
