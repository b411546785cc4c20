"""Retention: old finished runs go with everything they own; batches keep their verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from conftest import Api, claim, finish, make_settings, start_api
from testqueue import artifacts
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.models import (
    Artifact,
    Execution,
    ExecutionAttempt,
    ExecutionLog,
    ExecutionStep,
    ScheduleFire,
    WebhookDelivery,
    utcnow,
)
from testqueue.queue import prune
from testqueue.runners import Registry
from testqueue.vocabulary import ArtifactRecord, Progress, Result, StepRecord
from waiting import until

E = Execution
V1 = "/api/v1"
OLD_DAYS = 100


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, artifact_store="disk", prune_batch_size=2)


async def _age(api: Api, ids: list[int], days: float = OLD_DAYS) -> None:
    """Make these runs look `days` old: queued, started and ended then (if they did)."""
    then = utcnow() - timedelta(days=days)
    async with api.state.db.write() as conn:
        for column in (E.queued_at, E.started_at, E.completed_at):
            await conn.execute(
                update(E).where(E.id.in_(ids), column.is_not(None)).values({column: then})
            )


async def _batch(api: Api, cases: list[int]) -> dict[str, Any]:
    made = await api.client.post(f"{V1}/batches", json={"test_case_ids": cases}, headers=api.admin)
    assert made.status_code == 201, made.text
    return dict(made.json())


async def _counts(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        return {
            model.__tablename__: (
                await conn.execute(select(func.count()).select_from(model))
            ).scalar_one()
            for model in (Execution, ExecutionLog, ExecutionStep, Artifact, ExecutionAttempt)
        }


async def _kept_a_retried_run_with_files(api: Api, settings: Settings) -> int:
    """A run that failed once and passed on its retry: two logs, steps, a file, an attempt."""
    case = await api.gate_test("flaky one", retries=1, retry_on=["fail"])
    run = (await api.run(case))["id"]
    (first,) = await claim(api, 1)
    await finish(api, first, Result.FAIL, progress=Progress(run, log="first\n"), retry=True)
    (second,) = await claim(api, 1)
    folder = artifacts.execution_dir(settings, run)
    folder.mkdir(parents=True)
    (folder / "shot.png").write_bytes(b"\x89PNG")
    kept = Progress(
        run,
        attempt=2,
        log="second\n",
        steps=[StepRecord(1, "goto", "pass")],
        artifacts=[ArtifactRecord("screenshot", "shot.png", folder / "shot.png", "image/png")],
    )
    await finish(api, second, Result.PASS, progress=kept)
    return int(run)


async def test_prune_takes_old_finished_runs_with_all_they_own_and_nothing_else(
    api_only: Api, settings: Settings
) -> None:
    api = api_only
    retried = await _kept_a_retried_run_with_files(api, settings)
    case = await api.gate_test("plain")
    done_batch = await _batch(api, [case, case])  # both end long ago: its runs go
    recent = (await api.run(case))["id"]  # ended today: stays
    running = (await api.run(case))["id"]  # started long ago, still running: stays
    claimed = await claim(api, 4)
    assert [c.id for c in claimed][-1] == running
    await finish(api, claimed[0], Result.PASS)
    await finish(api, claimed[1], Result.FAIL, error_message="expected 2")
    await finish(api, claimed[2], Result.PASS)
    open_batch = await _batch(api, [case, case])  # one ends long ago, one waits: all stay
    (half,) = await claim(api, 1)
    await finish(api, half, Result.PASS)
    waiting = (await api.run(case))["id"]  # queued long ago, still pending: stays
    done_ids = [e["id"] for e in done_batch["executions"]]
    open_ids = [e["id"] for e in open_batch["executions"]]
    await _age(api, [retried, *done_ids, running, *open_ids, waiting])
    before = await api.get(f"/batches/{done_batch['batch']['id']}")
    counted = await _counts(api.state.db)

    dry = await prune.prune(api.state.db, settings, dry_run=True)
    assert (dry.executions, dry.artifact_folders) == (3, 1)
    assert (dry.batches, dry.held_batches) == (
        {done_batch["batch"]["id"]},
        {open_batch["batch"]["id"]},
    )
    assert dry.summary().startswith("would remove 3 finished executions")
    assert await _counts(api.state.db) == counted, "a dry run changes nothing"
    assert artifacts.execution_dir(settings, retried).exists()

    report = await prune.prune(api.state.db, settings)
    assert (report.executions, report.artifact_folders, report.transactions) == (3, 1, 2)
    assert report.batches == {done_batch["batch"]["id"]}
    assert report.held_batches == {open_batch["batch"]["id"]}
    assert report.longest_transaction_s > 0
    left = await api.get("/executions?limit=50")
    assert sorted(e["id"] for e in left["items"]) == sorted([recent, running, *open_ids, waiting])
    assert await _counts(api.state.db) == {
        "executions": 5,
        "execution_logs": 0,
        "execution_steps": 0,
        "artifacts": 0,
        "execution_attempts": 0,
    }
    assert not artifacts.execution_dir(settings, retried).exists()

    after = await api.get(f"/batches/{done_batch['batch']['id']}")
    assert (len(before.pop("executions")), after.pop("executions")) == (2, [])
    assert after == before, "the batch keeps its status, counts, times and verdict"
    assert (after["verdict"], after["counts"]["passed"], after["counts"]["failed"]) == (
        "fail",
        1,
        1,
    )
    again = await prune.prune(api.state.db, settings)
    assert again.executions == 0
    again_read = await api.get(f"/batches/{done_batch['batch']['id']}")
    assert {**again_read, "executions": None} == {**before, "executions": None}, "counted once"


async def test_a_pruned_batch_keeps_its_verdict_on_the_dashboard_and_in_lists(
    api_only: Api, settings: Settings
) -> None:
    api = api_only
    flaky = await api.gate_test("flaky", retries=1, retry_on=["fail"])
    batch = (await _batch(api, [flaky]))["batch"]
    (first,) = await claim(api, 1)
    await finish(api, first, Result.FAIL, retry=True)
    (second,) = await claim(api, 1)
    await finish(api, second, Result.PASS)
    await _age(api, [first.id])
    listed = await api.get("/batches")
    assert (await prune.prune(api.state.db, settings)).executions == 1

    assert await api.get("/batches") == listed
    shown = listed["items"][0]
    assert (shown["id"], shown["verdict"], shown["counts"]["flaky"]) == (batch["id"], "pass", 1)
    detail = await api.get(f"/batches/{batch['id']}")
    assert (detail["total"], detail["done"], detail["executions"]) == (1, 1, [])
    async with api.dashboard() as browser:
        page = await browser.client.get(f"/batches/{batch['id']}")
    assert page.status_code == 200
    assert 'class="badge result-pass">pass<' in page.text
    assert "1 passed, 0 failed" in page.text and "1 flaky" in page.text


async def test_zero_days_keeps_everything(api_only: Api, settings: Settings) -> None:
    case = await api_only.gate_test("kept")
    run = (await api_only.run(case))["id"]
    (claimed,) = await claim(api_only, 1)
    await finish(api_only, claimed, Result.PASS)
    await _age(api_only, [run], days=10_000)
    report = await prune.prune(api_only.state.db, settings, days=0)
    assert report.executions == 0
    assert (await api_only.get(f"/executions/{run}"))["id"] == run


@pytest.fixture
async def worker_api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app with no worker; the test starts its own with retention settings."""
    settings = make_settings(database_url, tmp_path, retention_days=1, retention_interval=3600)
    async for value in start_api(settings, Registry(settings), with_worker=False):
        yield value


async def test_a_worker_prunes_when_it_starts(worker_api: Api, tmp_path: Path) -> None:
    api = worker_api
    case = await api.command_test(["true"], title="old")
    run = (await api.run(case))["id"]
    (claimed,) = await claim(api, 1)
    await finish(api, claimed, Result.PASS)
    await _age(api, [run], days=2)
    settings = api.state.settings
    dispatcher = Dispatcher(settings, api.state.db, Registry(settings), worker_id="pruner")
    await dispatcher.start()
    try:

        async def left() -> int:
            return (await _counts(api.state.db))["executions"]

        await until(left, lambda n: n == 0)
    finally:
        await dispatcher.stop(0)


async def test_one_host_prunes_at_a_time_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = make_settings(postgres_url, tmp_path)
    first, second = Database(settings), Database(settings)
    try:
        async with prune.sole_pruner(first) as mine, prune.sole_pruner(second) as theirs:
            assert (mine, theirs) == (True, False)
        async with prune.sole_pruner(second) as now_theirs:
            assert now_theirs, "released when the first pass ended"
    finally:
        await first.dispose()
        await second.dispose()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testqueue", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_prune_command_says_what_it_would_remove_and_then_removes_it(
    api_only: Api, settings: Settings, tmp_path: Path
) -> None:
    case = await api_only.gate_test("old")
    runs = [(await api_only.run(case))["id"] for _ in range(3)]
    for claimed in await claim(api_only, 3):
        await finish(api_only, claimed, Result.PASS)
    await _age(api_only, runs[:2])
    env = {
        "DATABASE_URL": settings.database_url,
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "LOG_LEVEL": "WARNING",
    }

    shown = _cli("prune", "--help", env=env)
    assert shown.returncode == 0 and "RETENTION_DAYS" in shown.stdout
    assert "--dry-run" in shown.stdout

    dry = _cli("prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 2 finished executions"), dry.stdout
    assert len((await api_only.get("/executions"))["items"]) == 3

    done = _cli("prune", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 2 finished executions"), done.stdout
    assert "the longest" in done.stdout
    assert [e["id"] for e in (await api_only.get("/executions"))["items"]] == [runs[2]]

    wrong = _cli("prune", "--days", "-1", env=env)
    assert wrong.returncode == 2 and "--days" in wrong.stderr


async def test_settled_deliveries_and_schedule_ticks_go_too_and_a_pending_delivery_stays(
    api_only: Api, settings: Settings
) -> None:
    """Deliveries of queue and batch events belong to no run, and ticks pile up with time:
    both go once older than the cutoff; a delivery still to be sent is kept."""
    made = await api_only.client.post(
        f"{V1}/webhooks",
        json={"url": "https://hooks.example.com/qa", "events": ["queue.paused", "queue.resumed"]},
        headers=api_only.admin,
    )
    assert made.status_code == 201, made.text
    for switch in ("pause", "resume"):
        answer = await api_only.client.post(
            f"{V1}/executions/queue/{switch}", headers=api_only.admin
        )
        assert answer.status_code == 200, answer.text
    case = await api_only.gate_test("ticked")
    schedule = await api_only.client.post(
        f"{V1}/schedules",
        json={"name": "nightly", "cron": "0 3 * * *", "run": {"test_case_ids": [case]}},
        headers=api_only.admin,
    )
    assert schedule.status_code == 201, schedule.text
    db = api_only.state.db
    async with db.write() as conn:
        first, second = (
            await conn.execute(select(WebhookDelivery.id).order_by(WebhookDelivery.id))
        ).scalars()
        await conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == first).values(state="delivered")
        )
        await conn.execute(
            insert(ScheduleFire).values(
                schedule_id=schedule.json()["id"], due_at=utcnow(), fired_at=utcnow()
            )
        )
    later = utcnow() + timedelta(days=settings.retention_days + 1)
    dry = await prune.prune(db, settings, dry_run=True, now=later)
    assert (dry.deliveries, dry.ticks) == (1, 1)
    report = await prune.prune(db, settings, now=later)
    assert (report.deliveries, report.ticks) == (1, 1)
    assert "1 settled webhook deliveries and 1 schedule ticks" in report.summary()
    async with db.read() as conn:
        kept = (await conn.execute(select(WebhookDelivery.id))).scalars().all()
        ticks = (await conn.execute(select(func.count()).select_from(ScheduleFire))).scalar_one()
    assert (kept, ticks) == ([second], 0)
