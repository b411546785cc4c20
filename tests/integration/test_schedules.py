"""Schedules: ticks in a zone, catch-up, rights, bad input, the API and the page, firing
batches that run, exactly one batch per tick across racing schedulers, wake-ups on edit."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update

from conftest import Api, make_settings, start_api
from gates import GateRunner, with_gate
from testqueue import schedule_times
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.models import Batch, Schedule, ScheduleFire, as_utc, utcnow
from testqueue.runners import Registry
from testqueue.scheduler import Scheduler
from testqueue.services import schedule_fires
from waiting import until

V1 = "/api/v1"
NEVER_SOON = "0 0 1 1 *"  # new year: the next tick is weeks away
EVERY_SECOND = "* * * * * *"


async def _create(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    response = await api.client.post(f"{V1}/schedules", json=body, headers=headers or api.admin)
    assert response.status_code == 201, response.text
    return response.json()


def _body(case_id: int, cron: str = NEVER_SOON, **fields: Any) -> dict[str, Any]:
    return {"name": "nightly", "cron": cron, "run": {"test_case_ids": [case_id]}, **fields}


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )


async def _fires(db: Database, schedule_id: int) -> list[Any]:
    async with db.read() as conn:
        found = await conn.execute(
            select(ScheduleFire.__table__)
            .where(ScheduleFire.schedule_id == schedule_id)
            .order_by(ScheduleFire.due_at)
        )
        return list(found.all())


async def _set_next(db: Database, schedule_id: int, at: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(
            update(Schedule).where(Schedule.id == schedule_id).values(next_fire_at=at)
        )


@asynccontextmanager
async def _app(settings: Settings, registry: Registry) -> AsyncIterator[Api]:
    """The API without a worker, on settings of the test's own."""
    async for api in start_api(settings, registry, with_worker=False):
        yield api


@asynccontextmanager
async def _running(scheduler: Scheduler) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stopping))
    try:
        yield stopping
    finally:
        stopping.set()
        await task


# -- times, bad input, rights ------------------------------------------------------------------


async def test_a_schedule_shows_its_next_five_ticks_in_utc_and_in_its_zone(api_only: Api) -> None:
    case = await api_only.gate_test("morning")
    made = await _create(api_only, _body(case, "0 6 * * 1-5", timezone="Europe/Berlin"))
    times = made["next_fire_times"]
    assert len(times) == 5
    for tick in times:
        when = datetime.fromisoformat(tick["utc"].replace("Z", "+00:00"))
        shown = datetime.fromisoformat(tick["local"])
        assert shown == when and (shown.hour, shown.minute) == (6, 0)
        assert shown.weekday() < 5 and when > utcnow()
    assert made["next_fire_at"] == times[0]["utc"]
    assert made["catch_up"] == "none" and made["paused"] is False and made["last_fires"] == []
    assert made["run"]["test_case_ids"] == [case]


async def test_bad_schedules_are_refused_with_422s_that_say_what_to_fix(api_only: Api) -> None:
    case = await api_only.gate_test("x")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timezone": "Mars/Olympus"}, "time zone 'Mars/Olympus' is unknown"),
        ({"cron": "61 * * * *"}, "not a cron expression"),
        ({"cron": "* * *"}, "has 3 fields"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"catch_up": "all"}, "catch_up"),
        ({"run": {}}, "suite_id, tags or test_case_ids"),
        ({"name": ""}, "name"),
        ({"run": {"test_case_ids": [case], "priority": 11}}, "priority"),
    ]
    for change, says in cases:
        response = await api_only.client.post(
            f"{V1}/schedules", json={**_body(case), **change}, headers=api_only.admin
        )
        assert response.status_code == 422, (change, response.text)
        assert says in response.text, (change, response.text)
    missing = await api_only.client.post(
        f"{V1}/schedules", json=_body(case, run={"suite_id": 999}), headers=api_only.admin
    )
    assert missing.status_code == 404 and "suite 999 does not exist" in missing.text
    made = await _create(api_only, _body(case))
    edits: list[tuple[dict[str, Any], str]] = [
        ({"cron": "0 0 31 4 *"}, "never fires"),
        ({"timezone": "Europe/Atlantis"}, "unknown"),
        ({"timezone": "Europe"}, "unknown"),  # a folder of zones, not a zone
        ({"run": {"tags": ["Bad Tag"]}}, "run.tags.0"),
    ]
    for change, says in edits:
        response = await api_only.client.patch(
            f"{V1}/schedules/{made['id']}", json=change, headers=api_only.admin
        )
        assert response.status_code == 422, (change, response.text)
        assert says in response.text, (change, response.text)
    assert await _count(api_only.state.db, Schedule) == 1


async def test_a_schedule_that_fires_more_often_than_the_least_interval_is_refused(
    database_url: str, tmp_path: Path, registry: Registry
) -> None:
    settings = make_settings(database_url, tmp_path, schedule_min_interval=60.0)
    async with _app(settings, registry) as api:
        case = await api.gate_test("often")
        for cron in ("* * * * * */10", "0,30 * * * * *"):
            refused = await api.client.post(
                f"{V1}/schedules", json=_body(case, cron), headers=api.admin
            )
            assert refused.status_code == 422, refused.text
            assert (
                "SCHEDULE_MIN_INTERVAL" in refused.text
                and "at most once every 60 s" in refused.text
            )
        made = await _create(api, _body(case, "* * * * *"))  # once a minute: allowed
        retimed = await api.client.patch(
            f"{V1}/schedules/{made['id']}", json={"cron": "* * * * * *"}, headers=api.admin
        )
        assert retimed.status_code == 422 and "fires every 1 s" in retimed.text
        assert await _count(api.state.db, Schedule) == 1


async def test_members_keep_to_their_own_schedules_and_admins_see_and_change_all(
    api_only: Api,
) -> None:
    case = await api_only.gate_test("shared")
    mae = await api_only.member("mae")
    otto = await api_only.member("otto")
    made = await _create(api_only, _body(case, name="mae's"), mae)
    path = f"{V1}/schedules/{made['id']}"
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"cron": "0 7 * * *"}),
        ("POST", "/pause", None),
        ("DELETE", "", None),
    ]:
        refused = await api_only.client.request(method, path + suffix, json=body, headers=otto)
        assert refused.status_code == 403, (method, suffix, refused.text)
        assert "belongs to another user" in refused.text
    assert (await api_only.get("/schedules", otto))["total"] == 0
    assert [s["name"] for s in (await api_only.get("/schedules", mae))["items"]] == ["mae's"]
    assert [s["owner"] for s in (await api_only.get("/schedules"))["items"]] == ["mae"]
    paused = await api_only.client.post(f"{path}/pause", headers=api_only.admin)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    edited = await api_only.client.patch(path, json={"cron": "0 7 * * *"}, headers=api_only.admin)
    assert edited.status_code == 200 and edited.json()["owner_id"] == made["owner_id"]
    # A member schedules only what they may run: nothing deleted.
    archived = await api_only.gate_test("gone")
    await api_only.client.delete(f"{V1}/tests/{archived}", headers=api_only.admin)
    refused = await api_only.client.post(f"{V1}/schedules", json=_body(archived), headers=mae)
    assert refused.status_code == 404 and "does not exist or was deleted" in refused.text
    assert (await api_only.client.delete(path, headers=mae)).status_code == 204
    assert (await api_only.client.get(path, headers=mae)).status_code == 404


async def test_pause_fires_nothing_and_resume_starts_from_the_next_tick_after_now(
    api_only: Api,
) -> None:
    db = api_only.state.db
    case = await api_only.gate_test("hourly")
    made = await _create(api_only, _body(case, "0 * * * *", catch_up="last"))
    path = f"{V1}/schedules/{made['id']}"
    paused = (await api_only.client.post(f"{path}/pause", headers=api_only.admin)).json()
    assert paused["next_fire_at"] is None and paused["next_fire_times"] == []
    again = await api_only.client.post(f"{path}/pause", headers=api_only.admin)
    assert again.status_code == 409
    assert await schedule_fires.fire_due(db, utcnow() + timedelta(days=2)) == 0
    resumed = (await api_only.client.post(f"{path}/resume", headers=api_only.admin)).json()
    expected = schedule_times.next_tick("0 * * * *", "UTC", utcnow())
    assert resumed["next_fire_at"] == expected.isoformat().replace("+00:00", "Z")
    assert await schedule_fires.fire_due(db, utcnow()) == 0  # no flood of catch-up
    assert await _fires(db, made["id"]) == []


# -- firing --------------------------------------------------------------------------------------


async def test_catch_up_none_skips_missed_ticks_and_last_fires_the_latest_once(
    api_only: Api,
) -> None:
    """Both waited for a tick three hours before `now`; no scheduler ran since. Missed means
    older than SCHEDULE_GRACE (60 s) when a scheduler reaches it."""
    db = api_only.state.db
    case = await api_only.gate_test("hourly")
    skip = await _create(api_only, _body(case, "0 * * * *", name="skip"))
    last = await _create(api_only, _body(case, "0 * * * *", name="last", catch_up="last"))
    now = schedule_times.latest_tick("0 * * * *", "UTC", utcnow()) + timedelta(minutes=30)
    latest = now - timedelta(minutes=30)
    for made in (skip, last):
        await _set_next(db, made["id"], latest - timedelta(hours=3))
    assert await schedule_fires.fire_due(db, now) == 2
    assert await schedule_fires.fire_due(db, now) == 0
    assert await _fires(db, skip["id"]) == []
    (fired,) = await _fires(db, last["id"])
    assert as_utc(fired.due_at) == latest and fired.missed and fired.batch_id is not None
    for made in (skip, last):
        shown = await api_only.get(f"/schedules/{made['id']}")
        assert shown["next_fire_at"] == (latest + timedelta(hours=1)).isoformat().replace(
            "+00:00", "Z"
        )
    shown = await api_only.get(f"/schedules/{last['id']}")
    assert shown["last_fires"][0]["batch"]["name"] == "last"
    assert shown["last_fires"][0]["batch"]["triggered_by"] == "schedule last"
    # Within the grace a tick is on time: both modes fire it.
    on_time = latest + timedelta(hours=1, seconds=30)
    assert await schedule_fires.fire_due(db, on_time) == 2
    assert len(await _fires(db, skip["id"])) == 1 and len(await _fires(db, last["id"])) == 2


async def test_a_dead_schedule_records_why_on_its_tick_and_goes_on(api_only: Api) -> None:
    db = api_only.state.db
    case = await api_only.gate_test("doomed")
    suite = await api_only.client.post(
        f"{V1}/suites", json={"name": "doomed", "test_case_ids": [case]}, headers=api_only.admin
    )
    suite_id = suite.json()["id"]
    on_suite = await _create(
        api_only, _body(case, "0 * * * *", name="s", run={"suite_id": suite_id})
    )
    on_case = await _create(api_only, _body(case, "0 * * * *", name="c"))
    await api_only.client.delete(f"{V1}/suites/{suite_id}", headers=api_only.admin)
    await api_only.client.delete(f"{V1}/tests/{case}", headers=api_only.admin)
    tick = schedule_times.latest_tick("0 * * * *", "UTC", utcnow())
    for made in (on_suite, on_case):
        await _set_next(db, made["id"], tick)
    assert await schedule_fires.fire_due(db, tick + timedelta(seconds=1)) == 2
    for made, says in [(on_suite, f"suite {suite_id} does not exist"), (on_case, "was deleted")]:
        (fired,) = await _fires(db, made["id"])
        assert fired.batch_id is None and says in fired.error
        shown = await api_only.get(f"/schedules/{made['id']}")
        assert says in shown["last_error"] and says in shown["last_fires"][0]["error"]
        assert shown["next_fire_at"] > tick.isoformat()
    assert await _count(db, Batch) == 0


async def test_a_tick_fires_a_batch_whose_executions_run(api: Api, gate: GateRunner) -> None:
    """The worker's own scheduler fires it: every second here, paused after the first."""
    case = await api.gate_test("scheduled")
    made = await _create(
        api, _body(case, EVERY_SECOND, run={"test_case_ids": [case], "priority": 2})
    )
    await gate.wait_started(1)
    await api.client.post(f"{V1}/schedules/{made['id']}/pause", headers=api.admin)
    gate.open_all.set()

    async def shown() -> Any:
        return await api.get(f"/schedules/{made['id']}")

    done = await until(
        shown, lambda s: s["last_fires"] and all(f["batch"]["verdict"] for f in s["last_fires"])
    )
    first = done["last_fires"][-1]["batch"]
    assert first["verdict"] == "pass" and first["total"] == 1 and first["user_id"] == 1
    detail = await api.get(f"/batches/{first['id']}")
    assert detail["executions"][0]["priority"] == 2


async def test_the_unique_tick_refuses_a_second_batch_for_a_tick_fired_already(
    api_only: Api,
) -> None:
    """Even when the claim lets a tick through twice (here: its next_fire_at put back by
    hand), the fire row's unique key rolls the second batch back with it."""
    db = api_only.state.db
    case = await api_only.gate_test("once")
    made = await _create(api_only, _body(case, "0 * * * *"))
    tick = schedule_times.latest_tick("0 * * * *", "UTC", utcnow())
    for _ in range(2):
        await _set_next(db, made["id"], tick)
        await schedule_fires.fire_due(db, tick + timedelta(seconds=1))
    assert len(await _fires(db, made["id"])) == 1
    assert await _count(db, Batch) == 1
    # ... and the schedule moved on from that tick: it is not tried again each pass.
    async with db.read() as conn:
        upcoming = (
            await conn.execute(select(Schedule.next_fire_at).where(Schedule.id == made["id"]))
        ).scalar_one()
    assert as_utc(upcoming) > tick


async def test_racing_schedulers_on_postgres_fire_each_tick_exactly_once(
    postgres_url: str, tmp_path: Path, gate: GateRunner
) -> None:
    """Four schedulers, each with its own Database (its own pools, as on four hosts), all
    awake for every tick of a schedule that fires each second; several ticks in a row."""
    settings = make_settings(postgres_url, tmp_path, schedule_check_interval=3600.0)
    registry = with_gate(Registry(settings), gate)
    async with _app(settings, registry) as api:
        case = await api.gate_test("raced")
        made = await _create(api, _body(case, EVERY_SECOND))
        hosts = [Database(settings) for _ in range(4)]
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(Scheduler(settings, db).run(stopping)) for db in hosts]
        try:
            await until(lambda: _fires(api.state.db, made["id"]), lambda f: len(f) >= 6, 30)
        finally:
            stopping.set()
            await asyncio.gather(*tasks)
            for db in hosts:
                await db.dispose()
        fires = await _fires(api.state.db, made["id"])
        ticks = [as_utc(f.due_at) for f in fires]
        assert len(ticks) == len(set(ticks)) >= 6
        assert all(t.microsecond == 0 for t in ticks)
        batch_ids = [f.batch_id for f in fires]
        assert None not in batch_ids and len(set(batch_ids)) == len(batch_ids)
        # Every batch written has its fire row: a loser's batch went with its rollback.
        assert await _count(api.state.db, Batch) == len(fires)
        executions = await api.get("/executions?limit=1")
        assert executions["total"] == len(fires)


# -- wake-ups ------------------------------------------------------------------------------------


async def test_an_edit_wakes_a_sleeping_scheduler(
    database_url: str, tmp_path: Path, gate: GateRunner
) -> None:
    """The scheduler sleeps until new year (its safety net is an hour); a new cron wakes it
    by the in-process event and it fires within the second."""
    settings = make_settings(database_url, tmp_path, schedule_check_interval=3600.0)
    registry = with_gate(Registry(settings), gate)
    async with _app(settings, registry) as api:
        case = await api.gate_test("woken")
        made = await _create(api, _body(case))
        scheduler = Scheduler(settings, api.state.db)
        async with _running(scheduler):
            await until(lambda: _passes(scheduler), lambda n: n >= 1)
            asleep = scheduler.passes
            edited = await api.client.patch(
                f"{V1}/schedules/{made['id']}", json={"cron": EVERY_SECOND}, headers=api.admin
            )
            assert edited.status_code == 200, edited.text
            await until(lambda: _fires(api.state.db, made["id"]), bool, 10)
            assert scheduler.passes > asleep
            await api.client.post(f"{V1}/schedules/{made['id']}/pause", headers=api.admin)


async def _passes(scheduler: Scheduler) -> int:
    return scheduler.passes


async def _listening(db: Database) -> int:
    """Connections of this database that listen for wake-ups (the worker host's, once up)."""
    async with db.read() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = 'LISTEN testqueue'"
            )
        )
        return int(found.scalar_one())


async def test_an_edit_on_one_host_wakes_the_scheduler_of_another(
    postgres_url: str, tmp_path: Path, gate: GateRunner
) -> None:
    """The API host runs no worker; the worker host hears the edit by NOTIFY."""
    settings = make_settings(postgres_url, tmp_path, schedule_check_interval=3600.0)
    registry = with_gate(Registry(settings), gate)
    async with _app(settings, registry) as api:
        case = await api.gate_test("far away")
        made = await _create(api, _body(case))
        worker_db = Database(settings)
        worker = Dispatcher(settings, worker_db, with_gate(Registry(settings), gate), worker_id="b")
        await worker.start()
        try:
            await until(lambda: _passes(worker.scheduler), lambda n: n >= 1)
            await until(lambda: _listening(api.state.db), lambda n: n >= 1)
            asleep = worker.scheduler.passes
            await api.client.patch(
                f"{V1}/schedules/{made['id']}", json={"cron": EVERY_SECOND}, headers=api.admin
            )
            await until(lambda: _fires(api.state.db, made["id"]), bool, 10)
            assert worker.scheduler.passes > asleep
            await api.client.post(f"{V1}/schedules/{made['id']}/pause", headers=api.admin)
            gate.open_all.set()
        finally:
            await worker.stop(0)
            await worker_db.dispose()


# -- the dashboard -------------------------------------------------------------------------------


def _form(case: int, **fields: str) -> dict[str, str]:
    return {
        "name": "weekday smoke",
        "cron": "0 6 * * 1-5",
        "timezone": "Europe/Berlin",
        "catch_up": "none",
        "test_case_ids": str(case),
        **fields,
    }


async def test_the_schedules_page_makes_shows_pauses_resumes_and_deletes(api_only: Api) -> None:
    case = await api_only.gate_test("page")
    async with api_only.dashboard() as browser:
        listed = await browser.client.get("/schedules")
        assert listed.status_code == 200 and 'href="/schedules" aria-current="page"' in listed.text
        made = await browser.post("/schedules", **_form(case))
        assert made.status_code == 303, made.text
        target = made.headers["location"]
        assert re.fullmatch(r"/schedules/\d+", target)
        shown = await browser.client.get(target)
        assert shown.status_code == 200 and "Schedule &#39;weekday smoke&#39; saved." in shown.text
        assert shown.text.count(" 06:00 Europe/Berlin (+01:00)") == 5
        paused = await browser.post(f"{target}/pause")
        assert paused.status_code == 303
        page = (await browser.client.get(target)).text
        assert "Paused: it fires nothing" in page and ">Resume<" in page
        assert (await browser.post(f"{target}/resume")).status_code == 303
        assert ">Pause<" in (await browser.client.get(target)).text
        edited = await browser.post(target, **_form(case, cron="30 7 * * *"))
        assert edited.status_code == 303
        assert " 07:30 Europe/Berlin (+01:00)" in (await browser.client.get(target)).text
        forged = await browser.client.post(f"{target}/pause", data={"csrf": "forged"})
        assert forged.status_code == 403
        assert (await browser.post(f"{target}/delete", confirm="yes")).status_code == 303
        assert "No schedules yet." in (await browser.client.get("/schedules")).text


async def test_the_schedule_forms_answer_bad_input_with_a_message_beside_the_form(
    api_only: Api,
) -> None:
    case = await api_only.gate_test("forms")
    async with api_only.dashboard() as browser:
        for fields, says in [
            ({"cron": "61 * * * *"}, "is not a cron expression croniter reads"),
            ({"timezone": "Mars/Olympus"}, "time zone &#39;Mars/Olympus&#39; is unknown"),
            ({"cron": "0 0 30 2 *"}, "never fires"),
            ({"test_case_ids": "1, two"}, "test case ids: whole numbers"),
            ({"suite_id": "4000000000"}, "suite id: whole numbers"),
            ({"test_case_ids": "", "tags": ""}, "suite_id, tags or test_case_ids"),
            ({"test_case_ids": "999"}, "test case 999 does not exist"),
            ({"priority": "11"}, "priority"),
        ]:
            response = await browser.post("/schedules", **_form(case, **fields))
            assert response.status_code == 422, (fields, response.text[:300])
            assert says in response.text, (fields, response.text[-3000:])
            assert 'class="problem-text"' in response.text
        made = await browser.post("/schedules", **_form(case))
        target = made.headers["location"]
        refused = await browser.post(target, **_form(case, timezone="Nowhere/Land"))
        assert refused.status_code == 422 and "unknown" in refused.text
        for value in ["\0", "x" * 20_000, "<script>", "9" * 30, "\N{SUPERSCRIPT TWO}"]:
            for field in _form(case):
                for path in ("/schedules", target):
                    response = await browser.post(path, **_form(case, **{field: value}))
                    assert response.status_code < 500, (path, field, value[:20])
        assert (await browser.post(f"{target}/delete")).status_code == 400
        assert (await browser.client.get(target)).status_code == 200
