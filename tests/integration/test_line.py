"""Order, positions and filling every free slot at once (invariants 2, 3, 7)."""

from __future__ import annotations

from gates import GateRunner
from testqueue import queue
from testqueue.dispatcher import Dispatcher


async def test_eight_runs_five_slots_fill_at_once(api, gate: GateRunner) -> None:  # type: ignore[no-untyped-def]
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


async def _statuses(api, ids: list[int]) -> list[str]:  # type: ignore[no-untyped-def]
    return [(await api.get(f"/executions/{i}"))["status"] for i in ids]


async def test_strict_order_across_priorities_and_fifo_within(
    api_only,
    settings,
    registry,
    gate: GateRunner,  # type: ignore[no-untyped-def]
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


async def test_positions_follow_priority_change_and_cancel(api_only) -> None:  # type: ignore[no-untyped-def]
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


async def test_paused_queue_claims_nothing_and_says_why(api_only) -> None:  # type: ignore[no-untyped-def]
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


async def test_slots_change_at_runtime(api, gate: GateRunner) -> None:  # type: ignore[no-untyped-def]
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
