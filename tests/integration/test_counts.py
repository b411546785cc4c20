"""Kept counts (migration 0011): equal to a recount after every kind of change, on both
databases; backfilled from the rows there are; no waiting between writers on PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import delete, func, select

from conftest import STAND_IN, claim, make_settings, start_api
from gates import GateRunner, with_gate
from tallies import assert_kept_equal, deliveries_and_ticks, mixed_workload, recount
from testqueue.database import Database, alembic_config
from testqueue.models import Execution, TallyDelta
from testqueue.queue import counts, moves
from testqueue.runners import Registry
from testqueue.vocabulary import Result, Status

E = Execution


async def test_kept_counts_equal_a_recount_after_a_mixed_workload(api_only: Any) -> None:
    db = api_only.state.db
    done = await mixed_workload(api_only)
    kept = await counts.read(db)
    before = await recount(db)
    assert_kept_equal(kept, before)
    assert dict(kept.family("finished")) == done.finished
    assert (kept.total("cancelled"), kept.total("expired")) == (done.cancelled, done.expired)
    assert (kept.total("retried"), kept.total("flaky")) == (done.retried, done.flaky)
    assert (kept.pending, kept.running) == (done.pending, done.running)

    stats = await api_only.get("/executions/queue/statistics")
    assert stats["executions_by_status"] == {
        "pending": 1,
        "running": 1,
        "completed": 5,
        "cancelled": 4,
        "expired": 1,
    }
    assert stats["results"] == {"pass": 2, "fail": 1, "timeout": 1, "error": 1}
    assert stats["queue_status"]["active_count"] == 1
    assert stats["queue_status"]["queued_count"] == 1

    # Deleting history lowers the counts of rows, never the counters of what happened.
    async with db.write() as conn:
        await conn.execute(
            delete(E).where(E.result == Result.PASS.value, E.status == Status.COMPLETED.value)
        )
        await conn.execute(delete(E).where(E.status == Status.EXPIRED.value))
    after = await counts.read(db)
    assert_kept_equal(after, await recount(db), rows_only=True)
    assert {k: v for k, v in after.tallies.items() if k[0] != "rows"} == {
        k: v for k, v in kept.tallies.items() if k[0] != "rows"
    }
    stats = await api_only.get("/executions/queue/statistics")
    assert stats["executions_by_status"]["completed"] == 3
    assert stats["executions_by_status"]["expired"] == 0
    assert "pass" not in stats["results"]


async def test_the_migration_backfills_the_counts_of_existing_rows(
    api_only: Any, database_url: str
) -> None:
    db = api_only.state.db
    await mixed_workload(api_only)
    await deliveries_and_ticks(db)
    expected = await recount(db)
    kept = (await counts.read(db)).tallies
    config = alembic_config(database_url)
    try:
        # Back to before the tallies existed, with the rows kept, and up again.
        await asyncio.to_thread(command.downgrade, config, "0010")
        await asyncio.to_thread(command.upgrade, config, "0011")
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    backfilled = await counts.read(db)
    assert_kept_equal(backfilled, expected)
    # Nothing was deleted, so what the triggers kept is what the backfill counts.
    assert {k: v[0] for k, v in backfilled.tallies.items() if v[0]} == {
        k: v[0] for k, v in kept.items() if v[0]
    }


def test_the_triggers_and_the_reader_share_one_set_of_buckets() -> None:
    migration = importlib.import_module("testqueue.migrations.versions.0011_counts")
    assert migration.BUCKETS_S == counts.BUCKETS_S


async def test_writers_finishing_at_once_never_wait_on_each_other(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two transactions end runs with the same result at the same time: the second
    commits while the first is still open (shared counter rows would hold it)."""
    settings = make_settings(postgres_url, tmp_path)
    registry = with_gate(Registry(settings), GateRunner())
    second = Database(settings)
    try:
        async for api in start_api(settings, registry, with_worker=False):
            first = api.state.db
            test_id = await api.gate_test("gated")
            for _ in range(2):
                await api.run(test_id)
            one, two = await claim(api, 2)
            async with first.write() as held:
                await held.execute(_complete(one.id))
                async with asyncio.timeout(10), second.write() as other:
                    await other.execute(_complete(two.id))
            kept = await counts.read(first)
            assert kept.family("finished") == {("pass", "gate"): 2}
            assert_kept_equal(kept, await recount(first))
            # The reader folded the appended changes into `tallies`.
            async with first.read() as conn:
                query = select(func.count()).select_from(TallyDelta)
                assert (await conn.execute(query)).scalar() == 0
    finally:
        await second.dispose()


def _complete(execution_id: int) -> Any:
    return moves.move(
        Status.RUNNING,
        Status.COMPLETED,
        E.id == execution_id,
        E.worker_id == STAND_IN.worker_id,
        result=Result.PASS.value,
        completed_at=func.now(),
    )
