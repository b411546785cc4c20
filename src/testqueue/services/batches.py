"""Batches: many runs queued as one (a suite, tags, ids), with one status and one verdict.

Status, counts and verdict are read off the batch's executions when asked,
one grouped statement for any number of batches, so they can never drift
from what the runs did. A batch's executions are ordinary executions for
every other route. Runs removed by retention leave their counts and times
on the batch row (`pruned_*`), which the summary adds to the live ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import bindparam, func, select

from testqueue import errors, queue
from testqueue.database import Conn, Database
from testqueue.models import Batch, Execution, TestCase, as_utc
from testqueue.schemas.batches import (
    BatchCounts,
    BatchCreate,
    BatchDetail,
    BatchPage,
    BatchPublic,
    BatchQueued,
    ExecutionRow,
    RerunRequest,
)
from testqueue.services import runs, suites
from testqueue.services.accounts import Actor
from testqueue.vocabulary import (
    FAILED_RESULTS,
    BatchStatus,
    Result,
    Status,
    TagMode,
    encode_tags,
    verdict_of,
)

B = Batch
E = Execution

_COUNTS = (
    select(
        E.batch_id,
        E.status,
        E.result,
        E.flaky,
        func.count().label("n"),
        func.min(E.started_at).label("first_start"),
        func.max(E.completed_at).label("last_end"),
    )
    .where(E.batch_id.in_(bindparam("ids", expanding=True)))
    .group_by(E.batch_id, E.status, E.result, E.flaky)
)


async def create_batch(db: Database, body: BatchCreate, actor: Actor) -> BatchQueued:
    """Queue what the request names, in a stable order, as one batch in one transaction."""
    async with db.read() as conn:
        batch, ids, options = await _planned(conn, body)
    batch_id, queued = await queue.enqueue_batch(db, batch, ids, actor.id, options)
    return BatchQueued(
        batch=await read_batch(db, batch_id),
        executions=runs.described(queued),
        message=f"batch {batch_id}: {len(queued)} executions queued",
    )


async def write_batch_in(conn: Conn, db: Database, body: BatchCreate, user_id: int) -> int:
    """`create_batch` inside a transaction the caller holds, for `user_id`: a schedule's
    tick writes its fire row in the same one. The caller wakes the dispatcher after it."""
    batch, ids, options = await _planned(conn, body)
    batch_id, _ = await queue.write_batch(conn, db, batch, ids, user_id, options)
    return batch_id


async def _planned(
    conn: Conn, body: BatchCreate
) -> tuple[queue.NewBatch, list[int], queue.RunOptions]:
    """The batch row, the test cases in their order and the run options a request names."""
    suite = await suites.read_suite_in(conn, body.suite_id) if body.suite_id is not None else None
    ids = [*(suite.test_case_ids if suite else []), *body.test_case_ids]
    tags = [*(suite.tags if suite else []), *body.tags]
    mode = suite.tag_mode if suite and not body.tags else body.tag_mode
    chosen = await suites.selection_in(conn, ids, tags, mode)
    name = body.name or _name(suite.name if suite else None, body.tags, mode, len(chosen))
    options = replace(
        runs.options_of(body),
        retries=body.retries,
        retry_on=encode_tags(body.retry_on) if body.retry_on is not None else None,
    )
    batch = queue.NewBatch(name=name, suite_id=suite.id if suite else None)
    return batch, [i for i, _ in chosen], options


async def summaries_of(conn: Conn, batch_ids: Iterable[int]) -> dict[int, BatchPublic]:
    """Each of these batches (those that still exist) with its status, counts and verdict."""
    wanted = sorted(set(batch_ids))
    if not wanted:
        return {}
    rows = (await conn.execute(select(B.__table__).where(B.id.in_(wanted)))).mappings().all()
    return {summary.id: summary for summary in await _summaries(conn, rows)}


def _name(suite: str | None, tags: Sequence[str], mode: TagMode, count: int) -> str:
    if suite:
        return suite
    if tags:
        joined = (" and " if mode == TagMode.ALL else " or ").join(sorted(tags))
        return f"tagged {joined}"
    return f"{count} test case{'' if count == 1 else 's'}"


async def list_batches(
    db: Database, limit: int, offset: int, suite_id: int | None = None
) -> BatchPage:
    """Batches, newest first, each with its status, counts and verdict."""
    where = [B.suite_id == suite_id] if suite_id is not None else []
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(B).where(*where))).scalar_one()
        rows = (
            (
                await conn.execute(
                    select(B.__table__)
                    .where(*where)
                    .order_by(B.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            .mappings()
            .all()
        )
        items = await _summaries(conn, rows)
    return BatchPage(items=items, total=total, limit=limit, offset=offset)


async def read_batch(db: Database, batch_id: int) -> BatchPublic:
    async with db.read() as conn:
        (summary,) = await _summaries(conn, [await _load(conn, batch_id)])
    return summary


def _rows_where(condition: Any) -> Any:
    return (
        select(
            E.id,
            E.test_case_id,
            TestCase.title,
            E.status,
            E.result,
            E.flaky,
            E.attempt,
            E.priority,
            E.queued_at,
            E.started_at,
            E.completed_at,
            E.error_message,
        )
        .outerjoin(TestCase, TestCase.id == E.test_case_id)
        .where(condition)
        .order_by(E.id)
    )


_EXECUTIONS = _rows_where(E.batch_id == bindparam("batch_id"))
_EXECUTION = _rows_where(E.id == bindparam("id"))


async def execution_row(db: Database, execution_id: int) -> ExecutionRow:
    """One execution as a batch shows it (batch or not)."""
    async with db.read() as conn:
        rows = (await conn.execute(_EXECUTION, {"id": execution_id})).all()
    if not rows:
        raise errors.NotFound(f"execution {execution_id} does not exist")
    return _executions(rows)[0]


async def batch_detail(db: Database, batch_id: int) -> BatchDetail:
    """A batch and every one of its executions, in the order queued."""
    summary, items = await _with_executions(db, batch_id)
    return BatchDetail(**dict(summary), executions=items)


async def batch_json(db: Database, batch_id: int) -> bytes:
    """`batch_detail` as JSON, for the API.

    A release's batch holds a thousand runs: they go from plain rows to JSON
    in one step (they come from the database, checked on the way in),
    without a model for each, which takes a fraction of the time.
    """
    summary, items = await _with_executions(db, batch_id)
    head = summary.model_dump_json().encode()
    return head[:-1] + b',"executions":' + _ROWS.dump_json(items) + b"}"


async def _with_executions(db: Database, batch_id: int) -> tuple[BatchPublic, list[ExecutionRow]]:
    async with db.read() as conn:
        row = await _load(conn, batch_id)
        (summary,) = await _summaries(conn, [row])
        rows = (await conn.execute(_EXECUTIONS, {"batch_id": batch_id})).all()
    return summary, _executions(rows)


_ROWS: TypeAdapter[list[ExecutionRow]] = TypeAdapter(list[ExecutionRow])


def _executions(rows: Sequence[Any]) -> list[ExecutionRow]:
    """Plain rows to plain data: a loop over tuples, as this runs for every run of a batch."""
    out: list[ExecutionRow] = []
    for (
        execution_id, case_id, title, status, result, flaky, attempt, priority,
        queued, started, completed, error,
    ) in rows:  # fmt: skip
        started = _utc(started)
        completed = _utc(completed)
        out.append(
            {
                "id": execution_id,
                "test_case_id": case_id,
                "test_case_title": title,
                "status": status,
                "result": result,
                "flaky": bool(flaky),
                "attempt": attempt,
                "priority": priority,
                "queued_at": _utc(queued),
                "started_at": started,
                "completed_at": completed,
                "run_seconds": (completed - started).total_seconds()
                if started and completed
                else None,
                "error_message": error,
            }
        )
    return out


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


async def cancel_batch(db: Database, batch_id: int, actor: Actor) -> BatchPublic:
    """Cancel the pending runs and stop the running ones: the owner's batch, or any for an admin."""
    async with db.read() as conn:
        row = await _load(conn, batch_id)
    if not (actor.is_admin or row["user_id"] == actor.id):
        raise errors.Forbidden(f"batch {batch_id} belongs to another user")
    note = actor.note("batch.cancel", f"batch {batch_id}") if row["user_id"] != actor.id else None
    await queue.cancel_batch(db, batch_id, note)
    return await read_batch(db, batch_id)


async def rerun(db: Database, batch_id: int, body: RerunRequest, actor: Actor) -> BatchQueued:
    """A new batch of the same test cases (or the failed ones), linked to the original."""
    async with db.read() as conn:
        original = await _load(conn, batch_id)
        found = await conn.execute(
            select(E.test_case_id, E.result, E.priority)
            .where(E.batch_id == batch_id, E.test_case_id.is_not(None))
            .order_by(E.id)
        )
        chosen = [
            r for r in found if body.only == "all" or r.result in {x.value for x in FAILED_RESULTS}
        ]
    if not chosen:
        raise errors.InvalidTransition(f"batch {batch_id} has no {body.only} executions to run")
    priorities = [body.priority or max(1, r.priority - 1) for r in chosen]
    options = queue.RunOptions(
        environment=original["environment"],
        base_url=original["base_url"],
        triggered_by=original["triggered_by"],
    )
    batch = queue.NewBatch(
        name=f"{original['name']} (rerun of #{batch_id}, {body.only})"[:200],
        suite_id=original["suite_id"],
        rerun_of=batch_id,
    )
    new_id, queued = await queue.enqueue_batch(
        db, batch, [r.test_case_id for r in chosen], actor.id, options, priorities
    )
    return BatchQueued(
        batch=await read_batch(db, new_id),
        executions=runs.described(queued),
        message=f"batch {new_id}: {len(queued)} executions queued again",
    )


async def _load(conn: Conn, batch_id: int) -> Any:
    row = (await conn.execute(select(B.__table__).where(B.id == batch_id))).mappings().one_or_none()
    if row is None:
        raise errors.NotFound(f"batch {batch_id} does not exist")
    return row


async def _summaries(conn: Conn, rows: Sequence[Any]) -> list[BatchPublic]:
    if not rows:
        return []
    groups: dict[int, list[Any]] = defaultdict(list)
    for group in await conn.execute(_COUNTS, {"ids": [row["id"] for row in rows]}):
        groups[group.batch_id].append(group)
    return [summarize(row, groups.get(row["id"], [])) for row in rows]


def summarize(row: Any, groups: Iterable[Any]) -> BatchPublic:
    """A batch row with its executions counted by status, result and flakiness."""
    counts = BatchCounts()
    results: dict[str, int] = {}
    starts: list[datetime] = []
    ends: list[datetime] = []
    for g in groups:
        _count(counts, results, g)
        if g.first_start is not None:
            starts.append(as_utc(g.first_start))
        if g.last_end is not None:
            ends.append(as_utc(g.last_end))
    _add_pruned(row, counts, results, starts, ends)
    total = counts.pending + counts.running + sum(results.values()) + counts.cancelled
    ended = counts.pending == 0 and counts.running == 0 and total > 0
    queued_at = as_utc(row["created_at"])
    finished_at = max(ends) if ended and ends else None
    return BatchPublic(
        id=row["id"],
        name=row["name"],
        suite_id=row["suite_id"],
        rerun_of=row["rerun_of"],
        user_id=row["user_id"],
        status=_status(counts, ended, row["cancelled_at"] is not None),
        verdict=verdict_of(results, counts.cancelled, counts.expired) if ended else None,
        total=total,
        done=total - counts.pending - counts.running,
        counts=counts,
        environment=row["environment"],
        base_url=row["base_url"],
        triggered_by=row["triggered_by"],
        queued_at=queued_at,
        started_at=min(starts) if starts else None,
        finished_at=finished_at,
        duration_seconds=(finished_at - queued_at).total_seconds() if finished_at else None,
    )


_RESULT_FIELDS = {
    Result.PASS: "passed",
    Result.FAIL: "failed",
    Result.ERROR: "errored",
    Result.TIMEOUT: "timed_out",
}


def _add_pruned(
    row: Any,
    counts: BatchCounts,
    results: dict[str, int],
    starts: list[datetime],
    ends: list[datetime],
) -> None:
    """What the runs removed by retention counted (kept on the row, `queue.prune`),
    so a batch's counts, times and verdict outlive its executions."""
    for result, field in _RESULT_FIELDS.items():
        gone = row[f"pruned_{field}"]
        if gone:
            setattr(counts, field, getattr(counts, field) + gone)
            results[result.value] = results.get(result.value, 0) + gone
    counts.cancelled += row["pruned_cancelled"]
    counts.expired += row["pruned_expired"]
    counts.flaky += row["pruned_flaky"]
    if row["pruned_first_start"] is not None:
        starts.append(as_utc(row["pruned_first_start"]))
    if row["pruned_last_end"] is not None:
        ends.append(as_utc(row["pruned_last_end"]))


def _count(counts: BatchCounts, results: dict[str, int], group: Any) -> None:
    if group.status == Status.PENDING:
        counts.pending += group.n
    elif group.status == Status.RUNNING:
        counts.running += group.n
    elif group.status == Status.CANCELLED:
        counts.cancelled += group.n
    elif group.status == Status.EXPIRED:
        counts.expired += group.n
    elif group.result in _RESULT_FIELDS:
        field = _RESULT_FIELDS[Result(group.result)]
        setattr(counts, field, getattr(counts, field) + group.n)
        results[group.result] = results.get(group.result, 0) + group.n
        if group.flaky:
            counts.flaky += group.n


def _status(counts: BatchCounts, ended: bool, cancelled: bool) -> str:
    if counts.running:
        return BatchStatus.RUNNING
    if counts.pending:
        return BatchStatus.PENDING
    if cancelled:
        return BatchStatus.CANCELLED
    return BatchStatus.COMPLETED if ended else BatchStatus.PENDING
