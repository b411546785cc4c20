"""Retention: finished executions older than `RETENTION_DAYS` go, a few hundred at a time.

Runs are chosen oldest end first (`ix_executions_ended`), read outside any
write transaction, and removed in short transactions of `PRUNE_BATCH_SIZE`
ids: on SQLite each one holds the write lock that claims wait for, so none
may last long. The database's cascades take each run's logs, steps,
attempts and artifact rows (and whatever else hangs off an execution); the
artifact folders go after the commit.

A batch's runs go only once every run of it has finished and ended before
the cutoff, so a batch is never shown half pruned while it is read. What the
removed runs counted is added to the batch row (`pruned_*`) in the same
transaction as the DELETE, from the rows the DELETE itself returned: two
pruners at once can never count a run twice, and the batch keeps its counts,
times and verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)

from testqueue import artifacts
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import Batch, Execution, ScheduleFire, WebhookDelivery, utcnow
from testqueue.vocabulary import FINAL_STATUSES, DeliveryState, Result, Status

E = Execution
B = Batch
_FINISHED = sorted(s.value for s in FINAL_STATUSES)
_RESULT_COLUMNS = {
    Result.PASS: "passed",
    Result.FAIL: "failed",
    Result.ERROR: "errored",
    Result.TIMEOUT: "timed_out",
}
_STATUS_COLUMNS = {Status.CANCELLED: "cancelled", Status.EXPIRED: "expired"}
COUNT_COLUMNS = ("passed", "failed", "errored", "timed_out", "cancelled", "expired", "flaky")


@dataclass
class PruneReport:
    """What a pass removed (or, dry, would remove), and how long its longest write lasted."""

    cutoff: datetime
    dry_run: bool
    executions: int = 0
    batches: set[int] = field(default_factory=set)
    held_batches: set[int] = field(default_factory=set)
    artifact_folders: int = 0
    deliveries: int = 0  # settled webhook deliveries not of a run (batch and queue events)
    ticks: int = 0  # schedule_fires rows
    transactions: int = 0
    longest_transaction_s: float = 0.0

    def summary(self) -> str:
        """One paragraph a person reads after `testqueue prune`."""
        verb = "would remove" if self.dry_run else "removed"
        runs = "execution" if self.executions == 1 else "executions"
        text = (
            f"{verb} {self.executions} finished {runs} that ended before "
            f"{self.cutoff:%Y-%m-%d %H:%M} UTC, with their logs, steps, attempts and "
            f"artifacts ({self.artifact_folders} artifact folders); "
            f"{len(self.batches)} batches keep their counts and verdict"
        )
        if self.held_batches:
            text += f"; kept {len(self.held_batches)} batches with runs not yet finished or newer"
        if self.deliveries or self.ticks:
            text += (
                f"; {verb} {self.deliveries} settled webhook deliveries and "
                f"{self.ticks} schedule ticks from before it"
            )
        if not self.dry_run and self.transactions:
            text += (
                f"; {self.transactions} transactions, the longest "
                f"{self.longest_transaction_s * 1000:.1f} ms"
            )
        return text + "."


# The status is checked on the rows read, not in the query: as a condition it would lead
# SQLite to walk `ix_executions_status` and sort a million rows.
_CHUNK = (
    select(E.id, E.batch_id, E.status, E.completed_at)
    .where(
        E.completed_at.is_not(None),
        E.completed_at < bindparam("cutoff", type_=E.completed_at.type),
        tuple_(E.completed_at, E.id)
        > tuple_(
            bindparam("after_at", type_=E.completed_at.type),
            bindparam("after_id", type_=E.id.type),
        ),
    )
    .order_by(E.completed_at, E.id)
    .limit(bindparam("n"))
)
# Batches with a run that is not finished, or ended after the cutoff: not yet.
_HELD = (
    select(E.batch_id)
    .where(
        E.batch_id.in_(bindparam("batch_ids", expanding=True)),
        or_(
            E.status.not_in(_FINISHED),
            E.completed_at.is_(None),
            E.completed_at >= bindparam("cutoff", type_=E.completed_at.type),
        ),
    )
    .group_by(E.batch_id)
)
_DELETE = (
    delete(E)
    .where(E.id.in_(bindparam("ids", expanding=True)), E.status.in_(_FINISHED))
    .returning(E.id, E.batch_id, E.status, E.result, E.flaky, E.started_at, E.completed_at)
)


def _earliest(column: Any, value: Any) -> Any:
    return case(
        (value.is_(None), column), (or_(column.is_(None), column > value), value), else_=column
    )


def _latest(column: Any, value: Any) -> Any:
    return case(
        (value.is_(None), column), (or_(column.is_(None), column < value), value), else_=column
    )


_FREEZE = (
    update(B)
    .where(B.id == bindparam("b_id"))
    .values(
        {
            **{
                f"pruned_{name}": getattr(B, f"pruned_{name}") + bindparam(f"b_{name}")
                for name in COUNT_COLUMNS
            },
            "pruned_first_start": _earliest(
                B.pruned_first_start, bindparam("b_first", type_=B.pruned_first_start.type)
            ),
            "pruned_last_end": _latest(
                B.pruned_last_end, bindparam("b_last", type_=B.pruned_last_end.type)
            ),
        }
    )
)


async def prune(
    db: Database,
    settings: Settings,
    *,
    days: float | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    stopping: asyncio.Event | None = None,
) -> PruneReport:
    """Remove (or with `dry_run` only count) finished runs that ended more than `days`
    (default `RETENTION_DAYS`) ago; 0 days keeps everything. Returns between two
    transactions once `stopping` is set."""
    keep_days = settings.retention_days if days is None else days
    cutoff = (now or utcnow()) - timedelta(days=keep_days)
    report = PruneReport(cutoff=cutoff, dry_run=dry_run)
    if keep_days <= 0:
        return report
    decided: dict[int, bool] = {}  # batch id -> whether its runs may go
    after: tuple[datetime, int] | None = None
    while stopping is None or not stopping.is_set():
        rows = await _next_chunk(db, cutoff, after, settings.prune_batch_size)
        if not rows:
            await _sweep_the_rest(db, settings, cutoff, report, stopping)
            return report
        if after is not None and (rows[-1].completed_at, rows[-1].id) <= after:
            raise RuntimeError("retention read the same runs twice; stopping this pass")
        after = (rows[-1].completed_at, rows[-1].id)
        await _decide_batches(db, cutoff, rows, decided, report)
        ids = [
            r.id
            for r in rows
            if r.status in _FINISHED and (r.batch_id is None or decided[r.batch_id])
        ]
        if not ids:
            continue
        if dry_run:
            report.executions += len(ids)
            going = set(ids)
            report.batches.update(r.batch_id for r in rows if r.id in going and r.batch_id)
            report.artifact_folders += await asyncio.to_thread(_folders, settings, ids)
            continue
        await _remove(db, settings, ids, report)
        await asyncio.sleep(0)  # let a waiting claim take its turn between two writes
    return report


def _the_rest(cutoff: datetime) -> list[tuple[Any, ColumnElement[bool], str]]:
    """What else grows with time: deliveries of batch and queue events (a run's go with it)
    once settled, and the record of schedule ticks; with the field of the report."""
    return [
        (
            WebhookDelivery,
            and_(
                WebhookDelivery.state != DeliveryState.PENDING,
                WebhookDelivery.occurred_at < cutoff,
            ),
            "deliveries",
        ),
        (ScheduleFire, ScheduleFire.fired_at < cutoff, "ticks"),
    ]


async def _sweep_the_rest(
    db: Database,
    settings: Settings,
    cutoff: datetime,
    report: PruneReport,
    stopping: asyncio.Event | None,
) -> None:
    """Remove `_the_rest` older than the cutoff, oldest first, a batch at a time."""
    for table, older, field_name in _the_rest(cutoff):
        if report.dry_run:
            async with db.read() as conn:
                found = (
                    await conn.execute(select(func.count()).select_from(table).where(older))
                ).scalar_one()
            setattr(report, field_name, int(found))
            continue
        while stopping is None or not stopping.is_set():
            async with db.read() as conn:
                ids = (
                    (
                        await conn.execute(
                            select(table.id)
                            .where(older)
                            .order_by(table.id)
                            .limit(settings.prune_batch_size)
                        )
                    )
                    .scalars()
                    .all()
                )
            if not ids:
                break
            async with db.write() as conn:
                began = time.perf_counter()
                gone = (await conn.execute(delete(table).where(table.id.in_(ids)))).rowcount
            report.longest_transaction_s = max(
                report.longest_transaction_s, time.perf_counter() - began
            )
            report.transactions += 1
            setattr(report, field_name, getattr(report, field_name) + int(gone))
            await asyncio.sleep(0)


@asynccontextmanager
async def sole_pruner(db: Database) -> AsyncIterator[bool]:
    """True while this process is the only one pruning: on PostgreSQL a session advisory
    lock tried without waiting (another host holding it means this pass is skipped);
    on SQLite always, as its write lock already takes the transactions one at a time
    and each removal counts only the rows its own DELETE returned."""
    if db.kind != "postgresql":
        yield True
        return
    async with db.autocommit() as conn:
        taken = (await conn.execute(_TRY_LOCK)).scalar_one()
        try:
            yield bool(taken)
        finally:
            if taken:
                await conn.execute(_UNLOCK)


RETENTION_LOCK_KEY = 0x7465_7374_7072  # "testpr": one pruner at a time across hosts
_TRY_LOCK = select(func.pg_try_advisory_lock(RETENTION_LOCK_KEY))
_UNLOCK = select(func.pg_advisory_unlock(RETENTION_LOCK_KEY))


async def _next_chunk(
    db: Database, cutoff: datetime, after: tuple[datetime, int] | None, size: int
) -> Sequence[Any]:
    start = after or (datetime(1970, 1, 1, tzinfo=cutoff.tzinfo), 0)
    params = {"cutoff": cutoff, "after_at": start[0], "after_id": start[1], "n": size}
    async with db.read() as conn:
        return (await conn.execute(_CHUNK, params)).all()


async def _decide_batches(
    db: Database,
    cutoff: datetime,
    rows: Iterable[Any],
    decided: dict[int, bool],
    report: PruneReport,
) -> None:
    """Which batches named in `rows` may lose their runs: once decided, kept for the pass."""
    new = sorted({r.batch_id for r in rows if r.batch_id is not None} - decided.keys())
    if not new:
        return
    async with db.read() as conn:
        held = set((await conn.execute(_HELD, {"batch_ids": new, "cutoff": cutoff})).scalars())
    for batch_id in new:
        decided[batch_id] = batch_id not in held
    report.held_batches.update(held)


async def _remove(db: Database, settings: Settings, ids: list[int], report: PruneReport) -> None:
    """One short transaction: delete the runs and add what they counted to their batches."""
    async with db.write() as conn:
        began = time.perf_counter()
        gone = (await conn.execute(_DELETE, {"ids": ids})).all()
        frozen = _frozen(gone)
        if frozen:
            await conn.execute(_FREEZE, frozen)
    report.longest_transaction_s = max(report.longest_transaction_s, time.perf_counter() - began)
    report.transactions += 1
    report.executions += len(gone)
    report.batches.update(row.batch_id for row in gone if row.batch_id is not None)
    report.artifact_folders += await asyncio.to_thread(
        _remove_files, settings, [r.id for r in gone]
    )


def _frozen(gone: Iterable[Any]) -> list[dict[str, Any]]:
    """The removed runs summed per batch, as `_FREEZE`'s parameters."""
    sums: dict[int, dict[str, Any]] = defaultdict(
        lambda: {**{f"b_{n}": 0 for n in COUNT_COLUMNS}, "b_first": None, "b_last": None}
    )
    for row in gone:
        if row.batch_id is None:
            continue
        out = sums[row.batch_id]
        column = _STATUS_COLUMNS.get(Status(row.status))
        if column is None and row.result is not None:
            column = _RESULT_COLUMNS.get(Result(row.result))
        if column is not None:
            out[f"b_{column}"] += 1
            # As the batch's summary counts them: finished with a result, passed on a retry.
            out["b_flaky"] += int(bool(row.flaky) and row.status == Status.COMPLETED)
        if row.started_at is not None:
            out["b_first"] = min(filter(None, (out["b_first"], row.started_at)))
        if row.completed_at is not None:
            out["b_last"] = max(filter(None, (out["b_last"], row.completed_at)))
    return [{"b_id": batch_id, **sums[batch_id]} for batch_id in sorted(sums)]


def _folders(settings: Settings, ids: Iterable[int]) -> int:
    return sum(1 for i in ids if artifacts.execution_dir(settings, i).exists())


def _remove_files(settings: Settings, ids: Iterable[int]) -> int:
    return sum(1 for i in ids if artifacts.remove_execution_artifacts(settings, i))
