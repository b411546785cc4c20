"""A mixed workload with known outcomes, and the kept counts recounted from the rows.

`mixed_workload` drives runs by hand (the `STAND_IN` worker of conftest) to
every end there is: pass, fail, timeout, a retry that then passes (flaky), a
cancel while waiting and while running, an expiry, a clear, a worker lost
past MAX_ATTEMPTS; one run is left waiting and one running. `recount` says,
from the rows alone, what the triggers of migration 0011 should have kept.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from conftest import STAND_IN, claim, finish
from testqueue import queue
from testqueue.models import (
    Execution,
    Schedule,
    ScheduleFire,
    TestCase,
    WebhookDelivery,
    WebhookSubscription,
    as_utc,
    utcnow,
)
from testqueue.queue import counts, moves
from testqueue.vocabulary import Result, Status

E = Execution
FINAL = {"completed", "cancelled", "expired"}
# How long a run made to last long was made to have waited, too.
WAITED_S = 0.7


@dataclass
class Recount:
    """What the tallies should say, counted from the rows."""

    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)  # cancelled, expired, flaky, retried
    durations: dict[str, list[tuple[str, float]]] = field(
        default_factory=lambda: {"wait_s": [], "run_s": []}
    )

    def histogram(self, family: str) -> dict[str, tuple[list[tuple[float, int]], float]]:
        """Cumulative buckets and sum of seconds per result."""
        shown = {}
        for result in {r for r, _ in self.durations[family]}:
            seconds = [s for r, s in self.durations[family] if r == result]
            buckets = [
                (float(b), sum(1 for s in seconds if s <= b)) for b in (*counts.BUCKETS_S, math.inf)
            ]
            shown[result] = (buckets, sum(seconds))
        return shown


async def recount(db: Any) -> Recount:
    """Count everything the triggers keep, from the executions there are now."""
    found = Recount()
    statement = select(
        E.status,
        E.result,
        E.flaky,
        E.retried,
        E.queued_at,
        E.started_at,
        E.completed_at,
        TestCase.runner,
    ).outerjoin(TestCase, TestCase.id == E.test_case_id)
    async with db.read() as conn:
        rows = (await conn.execute(statement)).all()
    for row in rows:
        found.ended["retried"] += row.retried
        if row.status not in FINAL:
            continue
        result = row.result or ""
        found.rows[(row.status, result)] += 1
        if row.status != "completed":
            found.ended[row.status] += 1
            continue
        found.finished[(result, row.runner or "")] += 1
        found.ended["flaky"] += int(bool(row.flaky))
        if row.started_at is not None:
            started = as_utc(row.started_at)
            found.durations["wait_s"].append(
                (result, (started - as_utc(row.queued_at)).total_seconds())
            )
            found.durations["run_s"].append(
                (result, (as_utc(row.completed_at) - started).total_seconds())
            )
    return found


def assert_kept_equal(kept: counts.Counts, expected: Recount, *, rows_only: bool = False) -> None:
    """The tallies read equal the recount (`rows_only`: the counts of rows in the table)."""
    assert Counter(kept.family("rows")) == +expected.rows
    if rows_only:
        return
    assert Counter(kept.family("finished")) == +expected.finished
    for name in ("cancelled", "expired", "flaky", "retried"):
        assert kept.total(name) == expected.ended[name], name
    for family in ("wait_s", "run_s"):
        shown = kept.histograms(family)
        wanted = expected.histogram(family)
        assert set(shown) == set(wanted), family
        for result, (buckets, total_s) in wanted.items():
            assert shown[result].buckets == buckets, (family, result)
            # SQLite's date functions keep milliseconds: each observation may be 1 ms off.
            slack = 0.002 * len(expected.durations[family])
            assert math.isclose(shown[result].sum_s, total_s, abs_tol=slack), (family, result)


@dataclass(frozen=True)
class Workload:
    """How many runs ended each way, as the test drove them."""

    finished: dict[tuple[str, str], int]
    cancelled: int
    expired: int
    retried: int
    flaky: int
    pending: int
    running: int
    run_seconds: dict[str, float]  # how long a run of each result was made to last, at least


async def _run_for(api: Any, test_id: int, result: Result, ran_s: float = 0.0, **body: Any) -> int:
    """Queue, claim and finish one run with `result`, its start moved back by `ran_s`."""
    run_id = int((await api.run(test_id, **body))["id"])
    (claimed,) = await claim(api, 1)
    assert claimed.id == run_id
    await _started_earlier(api, run_id, ran_s)
    await finish(api, claimed, result)
    return run_id


async def _started_earlier(api: Any, run_id: int, seconds: float) -> None:
    """A long run without waiting for one: its start moved back, and its queueing
    `WAITED_S` before that."""
    if not seconds:
        return
    started = utcnow() - timedelta(seconds=seconds)
    async with api.state.db.write() as conn:
        await conn.execute(
            moves.keep(
                Status.RUNNING,
                E.id == run_id,
                started_at=started,
                queued_at=started - timedelta(seconds=WAITED_S),
            )
        )


async def mixed_workload(api: Any) -> Workload:
    """Every way a run ends, on the app `api` (no dispatcher of its own)."""
    gated = await api.gate_test("gated")
    command = await api.command_test(["true"], title="command")
    retried = await api.gate_test("retried", retries=1)
    await _run_for(api, gated, Result.PASS, 3.0)
    await _run_for(api, command, Result.FAIL, 0.3)
    await _run_for(api, gated, Result.TIMEOUT, 40.0)
    # A retry: the failed attempt goes back in line, then passes (flaky).
    run_id = int((await api.run(retried))["id"])
    (first,) = await claim(api, 1)
    await finish(api, first, Result.FAIL, retry=True)
    (second,) = await claim(api, 1)
    assert second.id == run_id and second.attempt == 2
    await finish(api, second, Result.PASS)
    # Cancelled while waiting, and while running.
    waiting = (await api.run(gated))["id"]
    assert (
        await api.client.post(f"/api/v1/executions/{waiting}/cancel", headers=api.admin)
    ).is_success
    running = (await api.run(gated))["id"]
    (held,) = await claim(api, 1)
    assert (
        await api.client.post(f"/api/v1/executions/{running}/cancel", headers=api.admin)
    ).is_success
    await finish(api, held, Result.PASS)
    # Expired: its deadline moved into the past.
    stale = (await api.run(gated, queue_timeout_seconds=3600))["id"]
    async with api.state.db.write() as conn:
        await conn.execute(
            moves.keep(Status.PENDING, E.id == stale, expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await queue.expire_due(api.state.db) == 1
    # Cleared: two waiting runs.
    for _ in range(2):
        await api.run(command)
    cleared = await api.client.post("/api/v1/executions/queue/clear", headers=api.admin)
    assert cleared.json()["removed_count"] == 2
    # A worker lost past MAX_ATTEMPTS: completed with error.
    await api.run(gated)
    await claim(api, 1)
    assert await queue.expire_workers(api.state.db, [STAND_IN.worker_id], max_attempts=1) == 1
    # Left as they are: one running, one waiting.
    await api.run(gated)
    await claim(api, 1)
    await api.run(command)
    return Workload(
        finished={
            ("pass", "gate"): 2,
            ("fail", "command"): 1,
            ("timeout", "gate"): 1,
            ("error", "gate"): 1,
        },
        cancelled=4,
        expired=1,
        retried=1,
        flaky=1,
        pending=1,
        running=1,
        run_seconds={"pass": 3.0, "fail": 0.3, "timeout": 40.0},
    )


async def deliveries_and_ticks(db: Any) -> None:
    """Webhook deliveries: one left pending, one delivered, one failed (a delivered one
    deleted); schedule ticks: two that queued their batch, one that failed."""
    now = utcnow()
    async with db.write() as conn:
        subscription = (
            await conn.execute(
                insert(WebhookSubscription)
                .values(user_id=1, url="https://hooks.example/x", secret="s", events=",*,")
                .returning(WebhookSubscription.id)
            )
        ).scalar_one()
        ids = [
            (
                await conn.execute(
                    insert(WebhookDelivery)
                    .values(
                        subscription_id=subscription,
                        event="execution.finished",
                        subject=f"execution:{n}",
                        occurred_at=now,
                        next_attempt_at=now,
                        since=now,
                    )
                    .returning(WebhookDelivery.id)
                )
            ).scalar_one()
            for n in range(4)
        ]
        for delivery_id, state in zip(ids, ["delivered", "delivered", "failed"], strict=False):
            await conn.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(state=state)
            )
        await conn.execute(delete(WebhookDelivery).where(WebhookDelivery.id == ids[0]))
        schedule = (
            await conn.execute(
                insert(Schedule)
                .values(owner_id=1, name="nightly", cron="0 2 * * *")
                .returning(Schedule.id)
            )
        ).scalar_one()
        for hour, error in ((1, None), (2, None), (3, "its suite was deleted")):
            await conn.execute(
                insert(ScheduleFire).values(
                    schedule_id=schedule, due_at=now - timedelta(hours=hour), error=error
                )
            )
