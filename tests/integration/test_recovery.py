"""Invariant 5: a run whose worker vanished is recovered at its place, or ends in error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Api
from gates import GateRunner
from testqueue import queue
from testqueue.config import Settings, host_key
from testqueue.dispatcher import Dispatcher
from testqueue.runners import Registry
from waiting import until

GHOST_LEASE_S = 0.3


async def _enqueue(api: Api, count: int) -> list[int]:
    test_id = await api.gate_test()
    return [(await api.run(test_id))["id"] for _ in range(count)]


async def _ghost_claims(api: Api, count: int) -> list[int]:
    """A worker that claims and then never beats again, as if killed."""
    ghost = queue.Claimer("ghost:1", default_slots=5, lease_ttl_s=GHOST_LEASE_S, capacity=count)
    return [c.id for c in await queue.settle(api.state.db, ghost, [], count)]


async def _recover(api: Api, max_attempts: int) -> int:
    """One heartbeat of a worker holding nothing: how many lost runs it recovered."""
    probe = queue.Claimer("probe", default_slots=5, lease_ttl_s=5, capacity=0)
    return (await queue.heartbeat(api.state.db, probe, [], max_attempts)).recovered


@pytest.fixture
async def dispatcher(
    api_only: Api, settings: Settings, registry: Registry, gate: GateRunner
) -> AsyncIterator[Dispatcher]:
    two_slots = settings.model_copy(update={"max_concurrent_executions": 2, "max_attempts": 2})
    running = Dispatcher(two_slots, api_only.state.db, registry, worker_id="live")
    yield running
    await running.stop(grace_s=0)


async def test_lost_run_goes_back_to_its_place_with_attempt_plus_one(
    api_only: Api,
    dispatcher: Dispatcher,
    gate: GateRunner,
) -> None:
    first, second, third = await _enqueue(api_only, 3)
    assert await _ghost_claims(api_only, 1) == [first]
    await dispatcher.start()
    await gate.wait_started(1)
    assert gate.started == [second], "one slot is the ghost's, the other takes the next"

    # The ghost's lease runs out: its run is back in line ahead of `third`,
    # and its slot is free again, so it starts at once in its original place.
    await gate.wait_started(2)
    assert gate.started[1] == first
    detail = await api_only.get(f"/executions/{first}")
    assert detail["attempt"] == 2
    assert detail["status"] == "running"
    assert "queued again" in detail["error_message"]
    status = await api_only.get("/executions/queue/status")
    assert [q["execution_id"] for q in status["queue"]] == [third]

    gate.release(second, first)
    await gate.wait_started(3)
    assert gate.started[2] == third
    completed = await until(
        lambda: api_only.get(f"/executions/{first}"), lambda d: d["status"] == "completed"
    )
    assert completed["result"] == "pass"
    assert completed["error_message"] is None


async def test_run_lost_max_attempts_times_ends_in_error(api_only: Api) -> None:
    (only,) = await _enqueue(api_only, 1)

    async def recover() -> int:
        return await _recover(api_only, max_attempts=2)

    assert await _ghost_claims(api_only, 1) == [only]
    await until(recover, lambda n: n == 1)
    detail = await api_only.get(f"/executions/{only}")
    assert (detail["status"], detail["attempt"]) == ("pending", 2)

    assert await _ghost_claims(api_only, 1) == [only]
    await until(recover, lambda n: n == 1)
    detail = await api_only.get(f"/executions/{only}")
    assert (detail["status"], detail["result"], detail["attempt"]) == ("completed", "error", 2)
    assert "MAX_ATTEMPTS" in detail["error_message"]


async def test_cancel_asked_while_the_worker_is_gone_ends_cancelled(
    api_only: Api,
    dispatcher: Dispatcher,
) -> None:
    (only,) = await _enqueue(api_only, 1)
    await _ghost_claims(api_only, 1)
    response = await api_only.client.post(
        f"/api/v1/executions/{only}/cancel", headers=api_only.admin
    )
    assert response.json()["status"] == "running", "the ghost never confirms"
    await dispatcher.start()
    detail = await until(
        lambda: api_only.get(f"/executions/{only}"), lambda d: d["status"] == "cancelled"
    )
    assert detail["result"] is None


async def test_a_claim_its_worker_never_heard_of_is_recovered_after_the_lease(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
) -> None:
    """As when a claim's COMMIT succeeded but its answer was lost: the worker's
    heartbeats renew only the runs it knows it holds, so this one comes back."""
    short = settings.model_copy(update={"lease_ttl": GHOST_LEASE_S})
    live = Dispatcher(short, api_only.state.db, registry, worker_id="live")
    (only,) = await _enqueue(api_only, 1)
    unheard = queue.Claimer("live", default_slots=5, lease_ttl_s=GHOST_LEASE_S, capacity=1)
    assert [c.id for c in await queue.settle(api_only.state.db, unheard, [], 1)] == [only]
    await live.start()
    try:
        await gate.wait_started(1)
        assert gate.started == [only]
        detail = await api_only.get(f"/executions/{only}")
        assert (detail["status"], detail["attempt"], detail["worker_id"]) == ("running", 2, "live")
        gate.release(only)
        await gate.wait_for(lambda: len(gate.spans) == 1)
    finally:
        await live.stop(grace_s=0)


async def test_a_run_its_worker_claims_again_while_it_runs_goes_on_as_one(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
) -> None:
    """Heartbeats held up past the lease: the run is recovered and this same worker
    claims it again while its first copy still runs; no second copy starts."""
    db = api_only.state.db
    slow_beats = settings.model_copy(update={"lease_ttl": GHOST_LEASE_S, "heartbeat_interval": 60})
    worker = Dispatcher(slow_beats, db, registry, worker_id="slow-beats")
    await worker.start()
    try:
        (only,) = await _enqueue(api_only, 1)
        await gate.wait_started(1)

        async def recover() -> int:
            return await _recover(api_only, max_attempts=3)

        await until(recover, lambda n: n == 1)
        await until(
            lambda: api_only.get(f"/executions/{only}"),
            lambda d: (d["status"], d["attempt"], d["worker_id"]) == ("running", 2, "slow-beats"),
        )
        assert gate.started == [only] and len(gate.running) == 1
        gate.release(only)
        done = await until(
            lambda: api_only.get(f"/executions/{only}"), lambda d: d["status"] == "completed"
        )
        assert (done["result"], done["attempt"]) == ("pass", 2)
        assert gate.started == [only]
    finally:
        await worker.stop(grace_s=0)


async def test_a_run_claimed_while_the_worker_stops_is_stopped_and_given_back(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = api_only.state.db
    claimed_one = asyncio.Event()
    hold = asyncio.Event()
    settle = queue.settle

    async def slow_settle(*args: Any, **kwargs: Any) -> list[queue.Claimed]:
        claimed = await settle(*args, **kwargs)
        if claimed:
            claimed_one.set()
            await hold.wait()
        return claimed

    monkeypatch.setattr(queue, "settle", slow_settle)
    worker = Dispatcher(settings, db, registry, worker_id="stopping")
    await worker.start()
    (only,) = await _enqueue(api_only, 1)
    await asyncio.wait_for(claimed_one.wait(), timeout=10)
    stopping = asyncio.create_task(worker.stop(grace_s=0))

    async def claims_stopped() -> bool:
        return not worker.is_running

    await until(claims_stopped, bool)
    hold.set()  # the pass under way starts its run only now
    await asyncio.wait_for(stopping, timeout=10)
    assert gate.started == [only] and gate.running == set()
    detail = await api_only.get(f"/executions/{only}")
    assert (detail["status"], detail["attempt"]) == ("pending", 1)


def _a_free_pid() -> int:
    """A pid no process has on this machine now."""
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


async def test_a_worker_of_another_pid_namespace_is_never_reaped_by_its_pid(
    api_only: Api, dispatcher: Dispatcher, gate: GateRunner
) -> None:
    """Two containers with one hostname (host networking) number their processes apart:
    a worker's pid is judged only beside workers of its own boot and PID namespace."""
    db = api_only.state.db
    hostname = socket.gethostname()
    free_pid = _a_free_pid()
    here, elsewhere = await _enqueue(api_only, 2)
    dead_here = queue.Claimer(f"{hostname}:{free_pid}:here", 5, lease_ttl_s=60, capacity=1)
    alive_elsewhere = queue.Claimer(f"{hostname}:{free_pid}:there", 5, lease_ttl_s=60, capacity=1)
    for claimer, key in ((dead_here, host_key()), (alive_elsewhere, "another-boot:4026531836")):
        await queue.register_worker(db, claimer, hostname, free_pid, key)
        await queue.settle(db, claimer, [], 1)

    await dispatcher.start()
    await gate.wait_started(1)
    assert gate.started == [here], "the dead worker of this namespace was reaped at once"
    detail = await api_only.get(f"/executions/{elsewhere}")
    assert (detail["status"], detail["worker_id"]) == ("running", alive_elsewhere.worker_id)
    workers = {w["id"] for w in await api_only.get("/executions/queue/workers")}
    assert alive_elsewhere.worker_id in workers and dead_here.worker_id not in workers
