"""Counts of the queue read without scanning it: the kept tallies and index counts.

Finished executions pile up by the million; the line and the running runs
stay small. So what has ended is counted as it ends, by triggers on
`executions`, in the transaction of the change (migration 0011, `tallies`),
and what waits or runs is counted from its partial index when read. Both are
read in one statement, so every API host reports the same numbers.

On PostgreSQL the triggers append each change to `tally_deltas` instead of
adding to a shared row (many hosts finish at once and would wait on each
other's row lock). A read sums `tallies` and `tally_deltas` in one snapshot,
so it is exact whether or not the deltas were folded; folding them into
`tallies` only keeps that sum short, and one reader at a time does it.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, String, bindparam, cast, func, literal_column, select, text

from testqueue.database import Conn, Database
from testqueue.models import Execution, QueueState, Tally, TallyDelta, Worker
from testqueue.queue import dialect
from testqueue.queue.order import PENDING, RUNNING
from testqueue.queue.status import live_after, slots_in_force

E = Execution
# Upper bounds of the wait and run histograms' buckets, in seconds; the triggers of
# migration 0011 put each completed run in the first bucket that holds it.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
INF = "+Inf"
# A lock only the fold takes: a reader that finds it held skips folding.
FOLD_LOCK_KEY = 0x7465_7374_7461  # "testta"
# Each process folds at most this often; between folds a read sums a few more deltas.
FOLD_EVERY_S = 1.0
_folded_at: weakref.WeakKeyDictionary[Database, float] = weakref.WeakKeyDictionary()

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Histogram:
    """One labelled histogram: cumulative counts per upper bound, and the sum of seconds."""

    buckets: list[tuple[float, int]]  # (upper bound, observations at or below it)
    count: int
    sum_s: float


@dataclass
class Counts:
    """The queue's figures at one instant."""

    pending_by_priority: dict[int, int]
    running: int
    slots: int
    paused: bool
    live_workers: int
    tallies: dict[Key, tuple[int, float]] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(self.pending_by_priority.values())

    def family(self, name: str) -> dict[tuple[str, str], int]:
        """The counts of one family of tallies, by (label, detail)."""
        return {(k[1], k[2]): v[0] for k, v in self.tallies.items() if k[0] == name and v[0]}

    def total(self, name: str) -> int:
        return sum(self.family(name).values())

    def by_status(self) -> dict[str, int]:
        """Executions now in the table in each status (finished ones from the tallies)."""
        counted = {"pending": self.pending, "running": self.running}
        for (status, _result), n in self.family("rows").items():
            counted[status] = counted.get(status, 0) + n
        return counted

    def by_result(self) -> dict[str, int]:
        """Finished executions now in the table by result."""
        counted: dict[str, int] = {}
        for (_status, result), n in self.family("rows").items():
            if result:
                counted[result] = counted.get(result, 0) + n
        return counted

    def histograms(self, name: str) -> dict[str, Histogram]:
        """The histogram family `name` (`wait_s` or `run_s`) by result, buckets cumulative."""
        per_result: dict[str, dict[str, tuple[int, float]]] = {}
        for (family, result, bucket), value in self.tallies.items():
            if family == name and value[0]:
                per_result.setdefault(result, {})[bucket] = value
        shown = {}
        for result, buckets in per_result.items():
            running_total, cumulative = 0, []
            for bound in (*BUCKETS_S, math.inf):
                running_total += buckets.get(bucket_label(bound), (0, 0.0))[0]
                cumulative.append((float(bound), running_total))
            total_s = sum(s for _n, s in buckets.values())
            shown[result] = Histogram(cumulative, running_total, total_s)
        return shown


def bucket_label(bound: float) -> str:
    """How a bucket's upper bound is written in `tallies.detail` (as the trigger writes it)."""
    return INF if math.isinf(bound) else str(bound)


_TALLIES = (
    select(Tally.family, Tally.label, Tally.detail, Tally.n, Tally.sum_s)
    .union_all(
        select(
            TallyDelta.family, TallyDelta.label, TallyDelta.detail, TallyDelta.n, TallyDelta.sum_s
        )
    )
    .subquery()
)
_SUMMED = select(
    _TALLIES.c.family,
    _TALLIES.c.label,
    _TALLIES.c.detail,
    func.sum(_TALLIES.c.n),
    func.sum(_TALLIES.c.sum_s),
).group_by(_TALLIES.c.family, _TALLIES.c.label, _TALLIES.c.detail)
# The line by priority, as rows of the same shape as the tallies: read in one statement.
PENDING_FAMILY = "pending"
_PENDING: Any = (
    select(
        literal_column(f"'{PENDING_FAMILY}'"),
        cast(E.priority, String),
        literal_column("''"),
        func.count(),
        literal_column("0.0"),
    )
    .where(PENDING)
    .group_by(E.priority)
)
_SUMMED_AND_PENDING = _SUMMED.union_all(_PENDING)


_QUEUE_ROW = select(
    slots_in_force(bindparam("default_slots", type_=Integer)),
    QueueState.paused,
    select(func.count()).where(RUNNING).scalar_subquery(),
    select(func.count())
    .select_from(Worker)
    .where(Worker.last_seen_at >= bindparam("cutoff", type_=Worker.last_seen_at.type))
    .scalar_subquery(),
).where(QueueState.id == 1)


async def read(db: Database) -> Counts:
    """The line by priority, the running runs, the slots, the switch, the live workers and
    every tally, from one connection."""
    settings = db.settings
    await _FOLDS[dialect.of(db).name](db)
    async with db.read() as conn:
        given = {
            "default_slots": settings.max_concurrent_executions,
            "cutoff": live_after(settings.lease_ttl),
        }
        row = (await conn.execute(_QUEUE_ROW, given)).one()
        tallies = await read_tallies(conn, _SUMMED_AND_PENDING)
    pending = {
        int(label): n for (family, label, _), (n, _s) in tallies.items() if family == PENDING_FAMILY
    }
    kept = {key: value for key, value in tallies.items() if key[0] != PENDING_FAMILY}
    return Counts(pending, int(row[2]), int(row[0]), bool(row[1]), int(row[3]), kept)


async def read_tallies(conn: Conn, statement: Any = _SUMMED) -> dict[Key, tuple[int, float]]:
    """Every tally, kept and not yet folded, summed in one snapshot."""
    rows = await conn.execute(statement)
    return {(f, label, d): (int(n or 0), float(s or 0.0)) for f, label, d, n, s in rows}


# One statement, outside a transaction (one round trip): the try-lock is held to its end,
# and a reader that finds it held (another folding now) deletes nothing.
_FOLD = text(
    "WITH mine AS (SELECT pg_try_advisory_xact_lock(:key) AS held), "
    "gone AS (DELETE FROM tally_deltas WHERE (SELECT held FROM mine) "
    "RETURNING family, label, detail, n, sum_s) "
    "INSERT INTO tallies (family, label, detail, n, sum_s) "
    "SELECT family, label, detail, sum(n), sum(sum_s) FROM gone "
    # One order for every fold, so two folds could never hold rows the other wants.
    "GROUP BY family, label, detail ORDER BY family, label, detail "
    "ON CONFLICT (family, label, detail) DO UPDATE "
    "SET n = tallies.n + excluded.n, sum_s = tallies.sum_s + excluded.sum_s"
)


async def fold(db: Database) -> None:
    """Fold PostgreSQL's appended changes into `tallies`, unless another reader is at it or
    this process folded less than `FOLD_EVERY_S` ago (a read sums what is left either way)."""
    now = time.monotonic()
    if now - _folded_at.get(db, -math.inf) < FOLD_EVERY_S:
        return
    _folded_at[db] = now
    async with db.write_one() as conn:
        await conn.execute(_FOLD, {"key": FOLD_LOCK_KEY})


async def _nothing_to_fold(_db: Database) -> None:
    """SQLite's triggers add to `tallies` directly."""


_FOLDS: dict[str, Callable[[Database], Awaitable[None]]] = {
    dialect.SQLITE.name: _nothing_to_fold,
    dialect.POSTGRES.name: fold,
}
