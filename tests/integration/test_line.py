"""Order, positions and filling every free slot at once (invariants 2, 3, 7)."""

from __future__ import annotations

import pytest

from gates import GateRunner, with_gate
from testqueue.runners import Registry


@pytest.fixture
def gate() -> GateRunner:
    return GateRunner()


@pytest.fixture
def registry(registry: Registry, gate: GateRunner) -> Registry:
    return with_gate(registry, gate)


async def _gate_test(api, title: str = "gated", **fields) -> int:  # type: ignore[no-untyped-def]
    response = await api.client.post(
        "/api/v1/tests", json={"title": title, "runner": "gate", **fields}, headers=api.admin
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def test_eight_runs_five_slots_fill_at_once(api, gate: GateRunner) -> None:  # type: ignore[no-untyped-def]
    test_id = await _gate_test(api)
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
