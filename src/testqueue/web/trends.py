"""Pass rate and median run time per test case over time, for the history page.

Reads only the most recent completed runs (`TREND_RUNS`), so the page costs
the same on a year-old database as on a new one. The time axis is shared by
every test case shown and cut into at most `MAX_BUCKETS` buckets of a round
length (a minute up to a week) chosen from the span the runs cover.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select

from testqueue.database import Conn
from testqueue.models import Execution, TestCase, as_utc
from testqueue.vocabulary import Result, Status
from testqueue.web import charts
from testqueue.web.render import span

E = Execution
TREND_RUNS = 1000
CASES_SHOWN = 8
MAX_BUCKETS = 12
BUCKET_SIZES_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)


@dataclass(frozen=True)
class Trend:
    """One test case's row of small charts, with the numbers behind them."""

    test_case_id: int
    title: str
    runs: int
    pass_rate: float
    flaky_rate: float  # passed, but only after a retry
    median_s: float | None
    pass_chart: charts.Chart
    time_chart: charts.Chart


def bucket_size(first: datetime, last: datetime) -> int:
    """The smallest round bucket length that covers the span in `MAX_BUCKETS` buckets."""
    spread = (last - first).total_seconds()
    for size in BUCKET_SIZES_S:
        if spread / size < MAX_BUCKETS:
            return size
    return BUCKET_SIZES_S[-1]


@dataclass(frozen=True)
class _Run:
    """One completed run as the charts need it: seconds since the epoch, not datetimes,
    converted once (2,000 rows, each read by several charts)."""

    test_case_id: int
    title: str
    passed: bool
    flaky: bool
    ended_s: float
    run_s: float | None


async def _recent(conn: Conn, where: list[ColumnElement[bool]]) -> list[_Run]:
    rows = await conn.execute(
        select(E.test_case_id, E.result, E.flaky, E.started_at, E.completed_at, TestCase.title)
        .join(TestCase, TestCase.id == E.test_case_id)
        .where(E.status == Status.COMPLETED, E.completed_at.is_not(None), *where)
        .order_by(E.id.desc())
        .limit(TREND_RUNS)
    )
    out = []
    for case_id, result, flaky, started, completed, title in rows:
        ended = as_utc(completed).timestamp()
        ran = ended - as_utc(started).timestamp() if started is not None else None
        out.append(_Run(case_id, title, result == Result.PASS, bool(flaky), ended, ran))
    return out


async def trends(conn: Conn, test_case_id: int | None) -> list[Trend]:
    """The busiest test cases of late (or the one asked for), each with its two charts."""
    where = [] if test_case_id is None else [E.test_case_id == test_case_id]
    runs = await _recent(conn, where)
    if not runs:
        return []
    by_case: dict[int, list[_Run]] = defaultdict(list)
    for run in runs:
        by_case[run.test_case_id].append(run)
    busiest = sorted(by_case, key=lambda case: (-len(by_case[case]), case))[:CASES_SHOWN]
    first = min(run.ended_s for run in runs)
    last = max(run.ended_s for run in runs)
    size = bucket_size(datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC))
    origin = int(first) // size * size
    count = (int(last) - origin) // size + 1
    labels = [_bucket_label(origin + i * size, size) for i in range(count)]
    return [_trend(by_case[case], origin, size, labels) for case in busiest]


def _bucket_label(start: int, size: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    return moment.strftime("%Y-%m-%d" if size >= 86400 else "%Y-%m-%d %H:%M UTC")


def _trend(runs: list[_Run], origin: int, size: int, labels: list[str]) -> Trend:
    buckets: list[list[_Run]] = [[] for _ in labels]
    for run in runs:
        index = (int(run.ended_s) - origin) // size
        buckets[min(max(index, 0), len(labels) - 1)].append(run)
    rates = [_pass_rate(b) if b else None for b in buckets]
    medians = [_median_run(b) for b in buckets]
    rate_labels = [
        f"{label}: {rate:.0f}% of {len(b)} passed" if rate is not None else label
        for label, rate, b in zip(labels, rates, buckets, strict=True)
    ]
    time_labels = [
        f"{label}: median {span(m)}" if m is not None else label
        for label, m in zip(labels, medians, strict=True)
    ]
    overall = _pass_rate(runs)
    median = _median_run(runs)
    rate_summary = f"pass rate over time, {overall:.0f}% overall"
    time_summary = f"median run time over time, {span(median)} overall"
    return Trend(
        test_case_id=runs[0].test_case_id,
        title=runs[0].title,
        runs=len(runs),
        pass_rate=overall,
        flaky_rate=100.0 * sum(1 for run in runs if run.flaky) / len(runs),
        median_s=median,
        pass_chart=charts.line(rates, rate_labels, 100.0, rate_summary),
        time_chart=charts.bars(medians, time_labels, time_summary),
    )


def _pass_rate(runs: list[_Run]) -> float:
    return 100.0 * sum(1 for run in runs if run.passed) / len(runs)


def _median_run(runs: list[_Run]) -> float | None:
    times = [run.run_s for run in runs if run.run_s is not None]
    return statistics.median(times) if times else None
