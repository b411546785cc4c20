"""Invariant 1: never more runs than slots, across dispatchers racing on one database."""

from __future__ import annotations

import asyncio
import random

from conftest import Api
from gates import GateRunner, with_gate
from spans import max_overlap
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.runners import Registry
from testqueue.vocabulary import Status

RUNS = 60
SLOTS = 5


async def _running_now(db: Database) -> int:
    from sqlalchemy import func, select

    from testqueue.models import Execution

    async with db.read() as conn:
        stmt = select(func.count()).where(Execution.status == Status.RUNNING)
        return int((await conn.execute(stmt)).scalar_one())


async def test_limit_holds_under_concurrent_enqueues_and_completions(
    api: Api,
    settings: Settings,
    gate: GateRunner,
) -> None:
    fast = settings.model_copy(update={"queue_check_interval": 0.05})
    others = []
    for n in range(2):
        db = Database(fast)
        others.append(
            (db, Dispatcher(fast, db, with_gate(Registry(fast), gate), worker_id=f"w{n}"))
        )
    for _, dispatcher in others:
        await dispatcher.start()

    test_id = await api.gate_test("race")
    rng = random.Random(7)
    samples: list[int] = []

    async def finisher() -> None:
        while len(gate.spans) < RUNS:
            await gate.wait_for(lambda: len(gate.running) > 0 or len(gate.spans) >= RUNS)
            if gate.running:
                gate.release(rng.choice(sorted(gate.running)))
            samples.append(await _running_now(api.state.db))

    try:
        first = [await api.run(test_id) for _ in range(SLOTS * 2)]
        await gate.wait_started(SLOTS)
        # Completions and enqueues now race; the slots start full.
        finishing = asyncio.create_task(finisher())
        rest = await asyncio.gather(*(api.run(test_id) for _ in range(RUNS - SLOTS * 2)))
        queued = first + list(rest)
        await asyncio.wait_for(finishing, timeout=60)
    finally:
        for db, dispatcher in others:
            await dispatcher.stop()
            await db.dispose()

    assert len({q["id"] for q in queued}) == RUNS
    assert sorted(gate.started) == sorted(q["id"] for q in queued), "each ran exactly once"
    assert max_overlap(list(gate.spans.values())) <= SLOTS
    assert max(samples) <= SLOTS
    assert gate.max_running == SLOTS, "the slots were all used at some point"
    stats = await api.get("/executions/queue/statistics")
    assert stats["executions_by_status"]["completed"] == RUNS


def test_max_overlap_counts_what_it_should() -> None:
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2
    assert max_overlap([(0, 5), (1, 2), (1.5, 3)]) == 3
