"""Queue policies on both databases: fair share, per-user caps, aging, queue timeouts,
concurrency keys, dedupe and backpressure; each with its own wait reason."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest import STAND_IN, Api, make_settings, start_api
from gates import GateRunner, with_gate
from spans import max_overlap
from testqueue import queue
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.models import Execution, utcnow
from testqueue.queue import moves
from testqueue.runners import Registry
from testqueue.services.accounts import Actor
from testqueue.vocabulary import Role, Status
from testqueue.web import board
from testqueue.web.session import Viewer
from waiting import until

API = "/api/v1"


@pytest.fixture
async def quiet(database_url: str, tmp_path: Path, gate: GateRunner) -> AsyncIterator[Any]:
    """Start an app without a worker, with settings the test chooses."""
    stack: list[Any] = []

    async def start(**overrides: Any) -> Api:
        settings = make_settings(database_url, tmp_path, **overrides)
        runs = start_api(settings, with_gate(Registry(settings), gate), with_worker=False)
        stack.append(runs)
        return await runs.__anext__()

    yield start
    for runs in stack:
        with pytest.raises(StopAsyncIteration):
            await runs.__anext__()


async def _dispatcher(
    api: Api, gate: GateRunner, name: str, *, own_db: bool = False, **overrides: Any
) -> Dispatcher:
    """A worker on the app's database (woken by its enqueues), or on a connection of its
    own, as another host would be."""
    settings: Settings = api.state.settings.model_copy(update=overrides)
    db = Database(settings) if own_db else api.state.db
    worker = Dispatcher(settings, db, with_gate(Registry(settings), gate), worker_id=name)
    await worker.start()
    return worker


async def _stop(worker: Dispatcher, api: Api) -> None:
    await worker.stop()
    if worker._db is not api.state.db:
        await worker._db.dispose()


async def _line(api: Api) -> list[dict[str, Any]]:
    return list((await api.get("/executions/queue/status?limit=100"))["queue"])


async def test_fair_share_interleaves_users_and_the_claim_follows_the_positions(
    quiet: Any, gate: GateRunner
) -> None:
    api = await quiet(max_concurrent_executions=2)
    test_id = await api.gate_test()
    bob = await api.member("bob")
    admins = [(await api.run(test_id))["id"] for _ in range(4)]
    bobs = [(await api.run(test_id, headers=bob))["id"] for _ in range(2)]
    urgent = (await api.run(test_id, priority=1))["id"]

    line = await _line(api)
    order = [q["execution_id"] for q in line]
    # Highest priority first; then, within one priority, the user with fewer running
    # (the replay frees slots in the order runs started).
    assert order == [urgent, bobs[0], admins[0], bobs[1], admins[1], admins[2], admins[3]]
    assert [q["queue_position"] for q in line] == list(range(1, 8))
    detail = await api.get(f"/executions/{bobs[1]}")
    assert (detail["queue_position"], detail["wait_reason"]) == (4, line[3]["wait_reason"])
    shown = await board.build(api.state, Viewer(Actor(1, "admin", Role.ADMIN), csrf="-"))
    assert [(r["id"], r["position"]) for r in shown["line"]] == [
        (q["execution_id"], q["queue_position"]) for q in line
    ]

    worker = await _dispatcher(api, gate, "w1", max_concurrent_executions=2)
    try:
        await gate.wait_started(2)
        waiting = {q["execution_id"]: q for q in await _line(api)}
        assert sorted(waiting) == sorted(order[2:])
        assert waiting[admins[1]]["wait_reason"] == (
            "all 2 slots are busy; behind 2 runs (fair share: 1 of them by users with "
            "fewer running)"
        )
        for count in range(1, len(order) + 1):
            await gate.wait_for(lambda c=count: len(gate.started) >= min(c + 1, len(order)))
            gate.release(gate.started[count - 1])  # the earliest started still running
    finally:
        await _stop(worker, api)
    assert gate.started == order


async def test_a_batch_is_told_the_positions_the_line_gives_it(quiet: Any) -> None:
    api = await quiet()
    test_id = await api.gate_test()
    bob = await api.member("bob")
    for _ in range(3):
        await api.run(test_id, headers=bob)
    response = await api.client.post(
        f"{API}/batches", json={"test_case_ids": [test_id] * 3}, headers=api.admin
    )
    assert response.status_code == 201, response.text
    told = {e["id"]: e["queue_position"] for e in response.json()["executions"]}
    line = {q["execution_id"]: q["queue_position"] for q in await _line(api)}
    assert told == {i: line[i] for i in told}
    assert sorted(told.values()) == [2, 4, 6], "interleaved with bob's (older) runs"


async def test_strict_order_without_fair_share(quiet: Any) -> None:
    api = await quiet(fair_share="none")
    test_id = await api.gate_test()
    bob = await api.member("bob")
    admins = [(await api.run(test_id))["id"] for _ in range(3)]
    bobs = [(await api.run(test_id, headers=bob))["id"] for _ in range(2)]
    assert [q["execution_id"] for q in await _line(api)] == admins + bobs


async def test_a_user_cap_holds_their_runs_while_others_start(quiet: Any, gate: GateRunner) -> None:
    api = await quiet(max_running_per_user=2)
    test_id = await api.gate_test()
    bob = await api.member("bob")
    admins = [(await api.run(test_id))["id"] for _ in range(4)]
    mine = (await api.run(test_id, headers=bob))["id"]
    worker = await _dispatcher(api, gate, "w1", max_running_per_user=2)
    try:
        await gate.wait_for(lambda: len(gate.running) == 3)
        assert sorted(gate.running) == sorted([*admins[:2], mine])
        line = await _line(api)
        assert [q["execution_id"] for q in line] == admins[2:]
        assert line[0]["wait_reason"] == "admin has 2 running (the cap is 2)"
        gate.release(admins[0])
        await gate.wait_for(lambda: admins[2] in gate.running)
        assert len(gate.running) == 3
    finally:
        gate.open_all.set()
        await _stop(worker, api)


async def _age(api: Api, execution_id: int, seconds: float) -> None:
    """Make a pending run as if it had been queued `seconds` ago."""
    async with api.state.db.write() as conn:
        await conn.execute(
            moves.keep(
                Status.PENDING,
                Execution.id == execution_id,
                queued_at=utcnow() - timedelta(seconds=seconds),
            )
        )


async def test_aging_raises_a_waiting_run_one_level_per_period(quiet: Any) -> None:
    api = await quiet(aging_seconds=60)
    test_id = await api.gate_test()
    low = (await api.run(test_id, priority=10))["id"]
    lowest = (await api.run(test_id, priority=10))["id"]
    medium = (await api.run(test_id, priority=5))["id"]
    eight = (await api.run(test_id, priority=8))["id"]
    await _age(api, low, 3 * 60 + 5)  # three periods: 10 -> 7
    await _age(api, lowest, 20 * 60)  # never above 1

    line = await _line(api)
    assert [q["execution_id"] for q in line] == [lowest, medium, low, eight]
    assert [(q["priority"], q["effective_priority"]) for q in line] == [
        (10, 1),
        (5, 5),
        (10, 7),
        (8, 8),
    ]
    detail = await api.get(f"/executions/{low}")
    assert (detail["priority"], detail["effective_priority"], detail["queue_position"]) == (
        10,
        7,
        3,
    )
    # The claim takes the same order.
    claimer = queue.Claimer("hand", 50, 60.0, 50, policies=queue.Policies.of(api.state.settings))
    taken = [c.id for c in await queue.settle(api.state.db, claimer, [], 4)]
    assert taken == [lowest, medium, low, eight]


async def test_the_wait_reason_says_how_far_waiting_raised_a_run(
    quiet: Any, gate: GateRunner
) -> None:
    api = await quiet(aging_seconds=60, max_concurrent_executions=1)
    test_id = await api.gate_test()
    worker = await _dispatcher(api, gate, "w1", aging_seconds=60, max_concurrent_executions=1)
    try:
        busy = (await api.run(test_id))["id"]
        await gate.wait_for(lambda: busy in gate.running)
        low = (await api.run(test_id, priority=10))["id"]
        await _age(api, low, 3 * 60 + 1)
        detail = await api.get(f"/executions/{low}")
        assert detail["wait_reason"] == (
            "next in line; all 1 slots are busy; waiting raised its priority from 10 to 7"
        )
    finally:
        gate.open_all.set()
        await _stop(worker, api)


async def test_an_aged_run_passes_a_younger_run_of_the_level_it_reached(quiet: Any) -> None:
    api = await quiet(aging_seconds=60)
    test_id = await api.gate_test()
    fresh = (await api.run(test_id, priority=5))["id"]
    old = (await api.run(test_id, priority=6))["id"]
    await _age(api, old, 61)  # 6 -> 5, and queued before `fresh`
    assert [q["execution_id"] for q in await _line(api)] == [old, fresh]
    assert (await api.get(f"/executions/{fresh}"))["queue_position"] == 2


async def test_a_run_past_its_queue_timeout_expires_unstarted(quiet: Any, gate: GateRunner) -> None:
    api = await quiet(max_concurrent_executions=1, queue_check_interval=30)
    held = await api.gate_test("holds the slot")
    waiting = await api.gate_test("waits", queue_timeout_seconds=0.5)
    worker = await _dispatcher(api, gate, "w1", max_concurrent_executions=1)
    try:
        busy = (await api.run(held))["id"]
        await gate.wait_for(lambda: busy in gate.running)
        expiring = (await api.run(waiting))["id"]
        never = (await api.run(held, queue_timeout_seconds=0))["id"]
        detail = await api.get(f"/executions/{expiring}")
        assert detail["expires_at"] is not None
        await until(
            lambda: api.get(f"/executions/{expiring}"), lambda run: run["status"] != "pending"
        )
        gate.release(busy)
        await gate.wait_for(lambda: never in gate.running)
        gate.release(never)
    finally:
        await _stop(worker, api)
    ended = await api.get(f"/executions/{expiring}")
    assert ended["status"] == "expired"
    assert ended["result"] is None and ended["started_at"] is None
    assert re.fullmatch(r"waited 0\.[5-9] s in the queue \(limit 0\.5 s\)", ended["error_message"])
    # Woken by its deadline, not by the 30 s poll.
    late = _seconds(ended["completed_at"]) - _seconds(detail["expires_at"])
    assert 0 <= late < 1.0, late
    assert expiring not in gate.started
    history = await api.get("/executions?status=expired")
    assert [e["id"] for e in history["items"]] == [expiring]
    stats = await api.get("/executions/queue/statistics")
    assert stats["executions_by_status"]["expired"] == 1


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_the_claim_never_starts_a_run_past_its_deadline(quiet: Any) -> None:
    api = await quiet(queue_timeout=60)
    test_id = await api.gate_test()
    stale, fresh = [(await api.run(test_id))["id"] for _ in range(2)]
    async with api.state.db.write() as conn:
        await conn.execute(
            moves.keep(
                Status.PENDING, Execution.id == stale, expires_at=utcnow() - timedelta(seconds=1)
            )
        )
    claimer = queue.Claimer("hand", 50, 60.0, 50)
    assert [c.id for c in await queue.settle(api.state.db, claimer, [], 5)] == [fresh]
    assert await queue.expire_due(api.state.db) == 1
    assert (await api.get(f"/executions/{stale}"))["status"] == "expired"


async def test_a_concurrency_key_holds_runs_with_that_key_only(
    quiet: Any, gate: GateRunner
) -> None:
    api = await quiet()
    keyed = await api.gate_test("db test", concurrency_key="db-{environment}")
    other = await api.gate_test("plain")
    first = (await api.run(keyed, environment="staging"))["id"]
    second = (await api.run(keyed, environment="staging"))["id"]
    prod = (await api.run(keyed, environment="prod"))["id"]
    behind = (await api.run(other))["id"]
    assert (await api.get(f"/executions/{second}"))["concurrency_key"] == "db-staging"
    worker = await _dispatcher(api, gate, "w1")
    try:
        await gate.wait_for(lambda: len(gate.running) == 3)
        assert sorted(gate.running) == sorted([first, prod, behind])
        (waiting,) = await _line(api)
        assert waiting["execution_id"] == second
        assert waiting["wait_reason"] == f"waiting for #{first} (same key db-staging, limit 1)"
        detail = await api.get(f"/executions/{second}")
        assert detail["wait_reason"] == waiting["wait_reason"]
        gate.release(first)
        await gate.wait_for(lambda: second in gate.running)
    finally:
        gate.open_all.set()
        await _stop(worker, api)


async def test_keys_and_caps_hold_across_racing_workers(quiet: Any, gate: GateRunner) -> None:
    """Three dispatchers on one database claim while runs finish at random: no key ever runs
    past its limit, no user past the cap, and every run runs once."""
    api = await quiet(max_running_per_user=3, max_concurrent_executions=6)
    limit_two = await api.gate_test("limit two", concurrency_key="shared", concurrency_limit=2)
    single = await api.gate_test("single", concurrency_key="solo-{environment}")
    bob = await api.member("bob")
    ids: dict[int, tuple[str, str]] = {}  # id -> (key, user)
    for n in range(12):
        ids[(await api.run(limit_two))["id"]] = ("shared", "admin")
        ids[(await api.run(single, headers=bob, environment="e"))["id"]] = ("solo-e", "bob")
        if n % 3 == 0:
            ids[(await api.run(single, environment="f"))["id"]] = ("solo-f", "admin")
    workers = [
        await _dispatcher(
            api,
            gate,
            f"w{n}",
            max_running_per_user=3,
            max_concurrent_executions=6,
            queue_check_interval=0.05,
            own_db=True,
        )
        for n in range(3)
    ]
    import random

    rng = random.Random(11)
    try:
        while len(gate.spans) < len(ids):
            await gate.wait_for(lambda: bool(gate.running) or len(gate.spans) >= len(ids))
            if gate.running:
                gate.release(rng.choice(sorted(gate.running)))
    finally:
        for worker in workers:
            await _stop(worker, api)
    assert sorted(gate.started) == sorted(ids), "each ran exactly once"
    for key, most in (("shared", 2), ("solo-e", 1), ("solo-f", 1)):
        spans = [gate.spans[i] for i, (k, _) in ids.items() if k == key]
        assert max_overlap(spans) <= most, key
    for user in ("admin", "bob"):
        spans = [gate.spans[i] for i, (_, u) in ids.items() if u == user]
        assert max_overlap(spans) <= 3, user
    assert max_overlap(list(gate.spans.values())) <= 6


async def test_dedupe_answers_the_waiting_twin(quiet: Any) -> None:
    api = await quiet()
    test_id = await api.gate_test()
    first = await api.run(test_id, environment="staging")
    url = f"{API}/executions/tests/{test_id}/run"
    again = await api.client.post(
        url, json={"dedupe": True, "environment": "staging"}, headers=api.admin
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"] and again.json()["deduplicated"] is True
    other_env = await api.client.post(
        url, json={"dedupe": True, "environment": "prod"}, headers=api.admin
    )
    assert other_env.status_code == 201 and other_env.json()["deduplicated"] is False
    plain = await api.client.post(url, json={"environment": "staging"}, headers=api.admin)
    assert plain.status_code == 201, "without dedupe a run is queued as asked"


async def test_concurrent_dedupe_requests_queue_one_run(quiet: Any) -> None:
    api = await quiet()
    test_id = await api.gate_test("deduped", dedupe=True)
    url = f"{API}/executions/tests/{test_id}/run"
    answers = await asyncio.gather(*(api.client.post(url, headers=api.admin) for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 11 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    refused = await api.client.post(url, json={"dedupe": False}, headers=api.admin)
    assert refused.status_code == 201, "the request may ask for its own run"


async def test_backpressure_refuses_whole_requests_past_the_limits(quiet: Any) -> None:
    api = await quiet(max_pending=4, max_pending_per_user=3)
    test_id = await api.gate_test()
    bob = await api.member("bob")
    for _ in range(3):
        await api.run(test_id)
    url = f"{API}/executions/tests/{test_id}/run"
    mine = await api.client.post(url, headers=api.admin)
    assert mine.status_code == 429, mine.text
    assert int(mine.headers["Retry-After"]) >= 1
    assert "MAX_PENDING_PER_USER is 3" in mine.json()["detail"]
    await api.run(test_id, headers=bob)
    full = await api.client.post(url, headers=bob)
    assert full.status_code == 429 and "4 wait in all" in full.json()["detail"]
    batch = await api.client.post(
        f"{API}/batches", json={"test_case_ids": [test_id, test_id]}, headers=bob
    )
    assert batch.status_code == 429, batch.text
    bulk = await api.client.post(
        f"{API}/executions/bulk", json={"test_case_ids": [test_id]}, headers=bob
    )
    assert bulk.status_code == 429
    async with api.state.db.read() as conn:
        pending = await conn.execute(select(Execution.id).where(Execution.status == "pending"))
        assert len(pending.all()) == 4, "nothing half-queued"


async def test_estimates_need_history_of_the_test_case_itself(quiet: Any) -> None:
    api = await quiet(max_concurrent_executions=1)
    known = await api.gate_test("known")
    unknown = await api.gate_test("unknown")
    now = utcnow()
    async with api.state.db.write() as conn:
        from sqlalchemy import insert

        await conn.execute(
            insert(Execution),
            [
                {
                    "test_case_id": known,
                    "status": "completed",
                    "result": "pass",
                    "priority": 5,
                    "queued_at": now,
                    "started_at": now,
                    "completed_at": now + timedelta(seconds=s),
                }
                for s in (10.0, 20.0, 30.0)
            ],
        )
    first = (await api.run(known))["id"]
    second = (await api.run(unknown))["id"]
    third = (await api.run(known))["id"]
    line = {q["execution_id"]: q for q in await _line(api)}
    assert line[second]["estimated_start"] is None, "no history of its own"
    start = _seconds(line[first]["estimated_start"])
    finish = _seconds(line[first]["estimated_finish"])
    assert finish - start == pytest.approx(20.0, abs=0.01)
    third_start = _seconds(line[third]["estimated_start"])
    # Behind the first (20 s) and the second, replayed with the median of all runs (20 s).
    assert third_start - start == pytest.approx(40.0, abs=0.01)
    detail = await api.get(f"/executions/{third}")
    assert _seconds(detail["estimated_start"]) == pytest.approx(third_start, abs=1.0)
    (running,) = await queue.settle(api.state.db, STAND_IN, [], 1)
    assert running.id == first
    started = await api.get(f"/executions/{first}")
    assert _seconds(started["estimated_finish"]) == pytest.approx(
        _seconds(started["started_at"]) + 20.0, abs=0.01
    )
