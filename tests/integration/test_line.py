"""Order, positions and filling every free slot at once (invariants 2, 3, 7)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from alembic import command
from sqlalchemy import select

from conftest import Api
from gates import GateRunner
from testqueue import queue
from testqueue.config import Settings
from testqueue.database import alembic_config
from testqueue.dispatcher import Dispatcher
from testqueue.models import Execution, LineCount
from testqueue.runners import Registry
from testqueue.vocabulary import Result


async def test_eight_runs_five_slots_fill_at_once(api: Api, gate: GateRunner) -> None:
    test_id = await api.gate_test()
    ids = [(await api.run(test_id))["id"] for _ in range(8)]
    await gate.wait_started(5)
    status = await api.get("/executions/queue/status")
    assert status["active_count"] == 5
    assert [a["execution_id"] for a in status["active"]] == ids[:5]
    assert [(q["execution_id"], q["queue_position"]) for q in status["queue"]] == [
        (ids[5], 1),
        (ids[6], 2),
        (ids[7], 3),
    ]
    assert status["is_under_limit"] is False
    gate.open_all.set()
    await gate.wait_for(lambda: len(gate.spans) == 8)
    assert gate.max_running == 5


async def _statuses(api: Api, ids: list[int]) -> list[str]:
    return [(await api.get(f"/executions/{i}"))["status"] for i in ids]


async def test_strict_order_across_priorities_and_fifo_within(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
) -> None:
    test_id = await api_only.gate_test()
    priorities = [5, 1, 10, 1, 5, 3, "high", "low", 5]
    ids = [(await api_only.run(test_id, priority=p))["id"] for p in priorities]
    numeric = [{"high": 1, "low": 10}.get(p, p) for p in priorities]  # type: ignore[call-overload]
    expected = [i for _, i in sorted(zip(numeric, ids, strict=True), key=lambda t: (t[0], t[1]))]

    status = await api_only.get("/executions/queue/status")
    assert [q["execution_id"] for q in status["queue"]] == expected
    assert [q["queue_position"] for q in status["queue"]] == list(range(1, len(ids) + 1))

    one_slot = settings.model_copy(update={"max_concurrent_executions": 1})
    dispatcher = Dispatcher(one_slot, api_only.state.db, registry, worker_id="one-slot")
    await dispatcher.start()
    try:
        for count, execution_id in enumerate(expected, start=1):
            await gate.wait_started(count)
            assert gate.started[-1] == execution_id
            gate.release(execution_id)
        await gate.wait_for(lambda: len(gate.spans) == len(ids))
    finally:
        await dispatcher.stop()
    assert gate.started == expected
    assert gate.max_running == 1


async def test_positions_follow_priority_change_and_cancel(api_only: Api) -> None:
    test_id = await api_only.gate_test()
    ids = [(await api_only.run(test_id))["id"] for _ in range(5)]
    assert [(await api_only.get(f"/executions/{i}"))["queue_position"] for i in ids] == [
        1,
        2,
        3,
        4,
        5,
    ]

    response = await api_only.client.patch(
        f"/api/v1/executions/{ids[3]}", json={"priority": "high"}, headers=api_only.admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["queue_position"] == 1
    status = await api_only.get("/executions/queue/status")
    assert [q["execution_id"] for q in status["queue"]] == [ids[3], ids[0], ids[1], ids[2], ids[4]]

    response = await api_only.client.post(
        f"/api/v1/executions/{ids[0]}/cancel", headers=api_only.admin
    )
    assert response.json()["status"] == "cancelled"
    status = await api_only.get("/executions/queue/status")
    assert [(q["execution_id"], q["queue_position"]) for q in status["queue"]] == [
        (ids[3], 1),
        (ids[1], 2),
        (ids[2], 3),
        (ids[4], 4),
    ]
    assert (await api_only.get(f"/executions/{ids[4]}"))["queue_position"] == 4
    assert (await api_only.get(f"/executions/{ids[0]}"))["queue_position"] is None


async def test_paused_queue_claims_nothing_and_says_why(api_only: Api) -> None:
    test_id = await api_only.gate_test()
    response = await api_only.client.post("/api/v1/executions/queue/pause", headers=api_only.admin)
    assert response.json()["paused"] is True
    execution_id = (await api_only.run(test_id))["id"]
    claimer = queue.Claimer("probe", default_slots=5, lease_ttl_s=5, capacity=5)
    assert await queue.settle(api_only.state.db, claimer, [], want=5) == []
    detail = await api_only.get(f"/executions/{execution_id}")
    assert detail["status"] == "pending"
    assert "paused" in detail["wait_reason"]

    await api_only.client.post("/api/v1/executions/queue/resume", headers=api_only.admin)
    claimed = await queue.settle(api_only.state.db, claimer, [], want=5)
    assert [c.id for c in claimed] == [execution_id]


async def test_slots_change_at_runtime(api: Api, gate: GateRunner) -> None:
    test_id = await api.gate_test()
    response = await api.client.post(
        "/api/v1/executions/bulk", json={"test_case_ids": [test_id] * 10}, headers=api.admin
    )
    ids = [e["id"] for e in response.json()["executions"]]
    await gate.wait_started(5)

    response = await api.client.put(
        "/api/v1/executions/queue/settings", json={"max_concurrent": 7}, headers=api.admin
    )
    assert response.json()["max_concurrent"] == 7
    await gate.wait_started(7)
    assert len(gate.running) == 7
    assert (await api.get("/executions/queue/status"))["queued_count"] == 3

    await api.client.put(
        "/api/v1/executions/queue/settings", json={"max_concurrent": 2}, headers=api.admin
    )
    gate.release(*ids[:6])
    await gate.wait_for(lambda: len(gate.spans) >= 6 and len(gate.running) == 2)
    status = await api.get("/executions/queue/status")
    assert status["active_count"] == 2
    assert status["max_concurrent"] == 2
    assert [a["execution_id"] for a in status["active"]] == [ids[6], ids[7]]


async def test_workers_started_with_other_slots_share_the_latest_one(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
) -> None:
    """Hosts started with different MAX_CONCURRENT_EXECUTIONS still share one global limit."""
    api = api_only
    three = Dispatcher(
        settings.model_copy(update={"max_concurrent_executions": 3}),
        api.state.db,
        registry,
        worker_id="three",
    )
    one = Dispatcher(
        settings.model_copy(update={"max_concurrent_executions": 1}),
        api.state.db,
        registry,
        worker_id="one",
    )
    await three.start()
    try:
        test_id = await api.gate_test()
        ids = [(await api.run(test_id))["id"] for _ in range(5)]
        await gate.wait_started(3)
        assert (await api.get("/executions/queue/settings"))["max_concurrent"] == 3

        await one.start()
        settings_now = await api.get("/executions/queue/settings")
        assert (settings_now["max_concurrent"], settings_now["max_concurrent_default"]) == (1, 1)
        # Neither worker starts more while three run; once they end, one at a time.
        gate.release(*ids[:3])
        await gate.wait_for(lambda: len(gate.spans) == 3 and len(gate.running) == 1)
        status = await api.get("/executions/queue/status")
        assert (status["active_count"], status["queued_count"], status["max_concurrent"]) == (
            1,
            1,
            1,
        )
        gate.max_running = len(gate.running)
        gate.release(*ids[3:])
        await gate.wait_for(lambda: len(gate.spans) == 5)
        assert gate.max_running == 1

        response = await api.client.put(
            "/api/v1/executions/queue/settings", json={"max_concurrent": 4}, headers=api.admin
        )
        assert (response.json()["max_concurrent"], response.json()["max_concurrent_default"]) == (
            4,
            1,
        )
    finally:
        await one.stop(grace_s=0)
        await three.stop(grace_s=0)


async def _check_positions(api: Api) -> None:
    """Every pending run's position is its place in (priority, queued_at, id) order."""
    db = api.state.db
    async with db.read() as conn:
        line = (
            await conn.execute(
                select(Execution.id, Execution.priority)
                .where(Execution.status == "pending")
                .order_by(Execution.priority, Execution.queued_at, Execution.id)
            )
        ).all()
        kept = dict((await conn.execute(select(LineCount.priority, LineCount.pending))).all())
    positions = [(await api.get(f"/executions/{row.id}"))["queue_position"] for row in line]
    assert positions == list(range(1, len(line) + 1))
    if db.is_sqlite:  # the per-priority counts the back-to-front count relies on
        actual = Counter(row.priority for row in line)
        assert {p: n for p, n in kept.items() if n} == dict(actual)


async def test_positions_stay_exact_through_every_change_of_the_line(api_only: Api) -> None:
    api = api_only
    test_id = await api.gate_test()
    low = await api.gate_test(priority="low")
    ids = [(await api.run(test_id, priority=p))["id"] for p in [5, 1, 5, 10, 3] * 4]
    response = await api.client.post(
        "/api/v1/executions/bulk", json={"test_case_ids": [test_id, low] * 5}, headers=api.admin
    )
    assert response.status_code == 201, response.text
    ids += [q["id"] for q in response.json()["executions"]]
    await _check_positions(api)

    for execution_id, priority in [(ids[0], "high"), (ids[7], 10), (ids[25], 2)]:
        response = await api.client.patch(
            f"/api/v1/executions/{execution_id}", json={"priority": priority}, headers=api.admin
        )
        assert response.status_code == 200, response.text
    for execution_id in (ids[2], ids[21]):
        await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.admin)
    await _check_positions(api)

    ghost = queue.Claimer("ghost:1", default_slots=50, lease_ttl_s=60, capacity=6)
    claimed = await queue.settle(api.state.db, ghost, [], 6)
    done = [queue.Finished(c.id, c.attempt, Result.PASS, 0, None) for c in claimed[:2]]
    await queue.settle(api.state.db, ghost, done, 0)
    await _check_positions(api)

    # The rest go back to their places, as when a worker dies.
    assert await queue.expire_workers(api.state.db, ["ghost:1"], max_attempts=3) == 4
    await _check_positions(api)

    response = await api.client.delete(f"/api/v1/tests/{low}", headers=api.admin)
    assert response.status_code == 204, response.text
    await _check_positions(api)
    response = await api.client.post("/api/v1/executions/queue/clear", headers=api.admin)
    assert response.status_code == 200, response.text
    await _check_positions(api)


def test_line_counts_start_from_the_runs_already_pending(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0003")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executemany(
            "INSERT INTO executions (status, priority, queued_at, attempt, cancel_requested,"
            " required_tags, total_steps, passed_steps, failed_steps, skipped_steps)"
            " VALUES (?, ?, '2026-11-28 09:00:00', 1, 0, '', 0, 0, 0, 0)",
            [("pending", 5), ("pending", 5), ("pending", 1), ("running", 1), ("completed", 5)],
        )
    command.upgrade(config, "head")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert dict(conn.execute("SELECT priority, pending FROM line_counts")) == {1: 1, 5: 2}
