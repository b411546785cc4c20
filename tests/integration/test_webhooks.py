"""Webhooks end to end: a real HTTP receiver on 127.0.0.1, the app with its worker."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from conftest import STAND_IN, Api, claim, make_settings, start_api
from gates import GateRunner, with_gate
from receiver import HOLD, Receiver
from testqueue import queue
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import Execution, utcnow
from testqueue.queue import deliveries, moves, outbox
from testqueue.runners import Registry
from testqueue.vocabulary import Status
from waiting import until

EXECUTION_EVENTS = [
    "execution.queued",
    "execution.started",
    "execution.finished",
    "execution.expired",
    "execution.cancelled",
]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        webhook_allow_private=True,
        webhook_retry_base=0.05,
        webhook_timeout=1.0,
    )


async def subscribe(api: Api, url: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    body = {"url": url, "events": EXECUTION_EVENTS, **body}
    response = await api.client.post("/api/v1/webhooks", json=body, headers=headers or api.admin)
    assert response.status_code == 201, response.text
    return response.json()


def verifies(secret: str, body: bytes, header: str) -> bool:
    """The receiver's check, as docs/webhooks.md shows it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"])


async def test_a_runs_events_arrive_in_order_signed(api: Api, gate: GateRunner) -> None:
    async with Receiver() as receiver:
        hook = await subscribe(api, receiver.url)
        case_id = await api.gate_test()
        runs = [(await api.run(case_id))["id"] for _ in range(3)]
        await until(lambda: _started(gate), lambda started: len(started) == 3)
        gate.release(*runs)
        await until(_counted(receiver), lambda n: n == 9)
        for run in runs:
            mine = [event for execution, event in receiver.events() if execution == run]
            assert mine == ["execution.queued", "execution.started", "execution.finished"]
        for item in receiver.received:
            assert verifies(hook["secret"], item.body, item.headers["x-testqueue-signature"])
        keys = [item.headers["x-testqueue-delivery"] for item in receiver.received]
        assert len(set(keys)) == 9
        finished = [i.json for i in receiver.received if i.json["event"] == "execution.finished"]
        assert {doc["execution"]["result"] for doc in finished} == {"pass"}


async def _started(gate: GateRunner) -> list[int]:
    return list(gate.started)


def _counted(receiver: Receiver) -> Any:
    async def count() -> int:
        return len(receiver.received)

    return count


async def deliveries_of(api: Api, hook_id: int) -> list[Any]:
    return list((await api.get(f"/webhooks/{hook_id}/deliveries?limit=500"))["items"])


async def test_retried_after_a_500_and_a_timeout_then_delivered(api: Api) -> None:
    async with Receiver(answers=[500, HOLD]) as receiver:
        hook = await subscribe(api, receiver.url, events=["execution.queued"])
        case_id = await api.gate_test()
        run = (await api.run(case_id))["id"]
        await until(_counted(receiver), lambda n: n == 3, timeout=20)
        (delivery,) = await until(
            lambda: deliveries_of(api, hook["id"]),
            lambda d: bool(d) and d[0]["state"] == "delivered",
        )
        detail = await api.get(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}")
        tries = detail["tries"]
        assert [t["status_code"] for t in tries] == [500, None, 200]
        assert "no answer within 1 s" in tries[1]["error"]
        # The same delivery each time: one idempotency key.
        assert {r.headers["x-testqueue-delivery"] for r in receiver.received} == {
            str(delivery["id"])
        }
        assert {r.json["execution"]["id"] for r in receiver.received} == {run}


async def test_a_change_rolled_back_sends_nothing(api_only: Api) -> None:
    api = api_only
    async with Receiver() as receiver:
        hook = await subscribe(api, receiver.url)
        case_id = await api.gate_test()
        refused = await api.client.post(
            "/api/v1/executions/bulk",
            json={"test_case_ids": [case_id, 2_000_000]},
            headers=api.admin,
        )
        assert refused.status_code == 404, refused.text
        assert await deliveries_of(api, hook["id"]) == []
        run = (await api.run(case_id))["id"]
        found = await deliveries_of(api, hook["id"])
        assert [(d["execution_id"], d["event"]) for d in found] == [(run, "execution.queued")]


async def test_a_filtered_subscription_hears_only_its_runs(api: Api, gate: GateRunner) -> None:
    async with Receiver() as everything, Receiver() as filtered:
        await subscribe(api, everything.url, events=["execution.finished"])
        chosen = await api.gate_test("chosen", tags=["smoke"])
        other = await api.gate_test("other")
        await subscribe(api, filtered.url, events=["execution.finished"], tag="smoke")
        by_case = await subscribe(
            api, filtered.url, events=["execution.queued"], test_case_id=other
        )
        runs = [(await api.run(case))["id"] for case in (chosen, other, chosen)]
        gate.open_all.set()
        await until(_counted(everything), lambda n: n == 3)
        await until(lambda: deliveries_of(api, by_case["id"]), lambda d: len(d) == 1)
        await until(_counted(filtered), lambda n: n == 3)
        assert sorted(filtered.events()) == sorted(
            [
                (runs[0], "execution.finished"),
                (runs[2], "execution.finished"),
                (runs[1], "execution.queued"),
            ]
        )


async def test_members_hear_their_own_runs_and_no_queue_events(api: Api, gate: GateRunner) -> None:
    member = await api.member()
    refused = await api.client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/x", "events": ["queue.paused"]},
        headers=member,
    )
    assert refused.status_code == 403
    assert "only an admin" in refused.json()["detail"]
    async with Receiver() as receiver:
        hook = await subscribe(api, receiver.url, headers=member, events=["execution.queued"])
        case_id = await api.gate_test()
        await api.run(case_id)  # the admin's: not the member's to hear
        own = (await api.run(case_id, headers=member))["id"]
        await until(_counted(receiver), lambda n: n == 1)
        assert receiver.events() == [(own, "execution.queued")]
        assert hook["own_runs_only"] is True
        other = await api.client.get(
            f"/api/v1/webhooks/{hook['id']}", headers=await api.member("m2")
        )
        assert other.status_code == 403


async def test_queue_and_batch_events(api: Api, gate: GateRunner) -> None:
    async with Receiver() as receiver:
        await subscribe(
            api, receiver.url, events=["queue.paused", "queue.resumed", "batch.finished"]
        )
        case_id = await api.gate_test()
        for switch in ("pause", "resume"):
            answer = await api.client.post(f"/api/v1/executions/queue/{switch}", headers=api.admin)
            assert answer.status_code == 200, answer.text
        batch = await api.client.post(
            "/api/v1/batches", json={"test_case_ids": [case_id, case_id]}, headers=api.admin
        )
        assert batch.status_code == 201, batch.text
        gate.open_all.set()
        await until(_counted(receiver), lambda n: n == 3)
        docs = [item.json for item in receiver.received]
        # In order per subject: the queue's two; the batch's own is apart.
        assert [d["event"] for d in docs if "queue" in d] == ["queue.paused", "queue.resumed"]
        (finished,) = [d["batch"] for d in docs if d["event"] == "batch.finished"]
        assert finished["verdict"] == "pass"
        assert finished["results"] == {"pass": 2}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]:8080/hook",
        "ftp://example.com/hook",
    ],
)
async def test_private_addresses_are_refused_without_the_setting(api_only: Api, url: str) -> None:
    api_only.state.db.settings.webhook_allow_private = False
    response = await api_only.client.post(
        "/api/v1/webhooks",
        json={"url": url, "events": ["execution.queued"]},
        headers=api_only.admin,
    )
    assert response.status_code == 422, response.text
    assert "url" in response.text.lower()
    if url.startswith("http://"):
        assert "WEBHOOK_ALLOW_PRIVATE" in response.text


async def test_a_host_name_resolving_to_loopback_is_refused_when_sent(api: Api) -> None:
    api.state.db.settings.webhook_allow_private = False
    async with Receiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        hook = await subscribe(api, url, events=["execution.queued"])
        await api.run(await api.gate_test())
        # `attempts` counts from the claim; the error is written when the attempt ends.
        (delivery,) = await until(
            lambda: deliveries_of(api, hook["id"]),
            lambda d: bool(d) and d[0]["last_error"] is not None,
        )
        assert "loopback" in delivery["last_error"], delivery
        assert receiver.received == []


async def test_redirects_are_not_followed(api: Api) -> None:
    async with Receiver() as target, Receiver(answers=[302, 200]) as receiver:
        receiver.redirect_to = target.url
        hook = await subscribe(api, receiver.url, events=["execution.queued"])
        await api.run(await api.gate_test())
        (delivery,) = await until(
            lambda: deliveries_of(api, hook["id"]),
            lambda d: bool(d) and d[0]["state"] == "delivered",
        )
        detail = await api.get(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}")
        assert [t["status_code"] for t in detail["tries"]] == [302, 200]
        assert "redirects are not followed" in detail["tries"][0]["error"]
        assert target.received == []


async def test_send_again(api: Api) -> None:
    async with Receiver() as receiver:
        hook = await subscribe(api, receiver.url, events=["execution.queued"])
        await api.run(await api.gate_test())
        (delivery,) = await until(
            lambda: deliveries_of(api, hook["id"]),
            lambda d: bool(d) and d[0]["state"] == "delivered",
        )
        path = f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver"
        again = await api.client.post(path, headers=api.admin)
        assert again.status_code == 202, again.text
        await until(_counted(receiver), lambda n: n == 2)
        keys = {r.headers["x-testqueue-delivery"] for r in receiver.received}
        assert keys == {str(delivery["id"])}
        # No connection is kept for the next request (one verified for another host name).
        assert {r.headers.get("connection") for r in receiver.received} == {"close"}


async def test_a_slack_subscription_gets_one_line(api: Api, gate: GateRunner) -> None:
    async with Receiver() as receiver:
        await subscribe(api, receiver.url, events=["execution.finished"], payload_format="slack")
        case_id = await api.gate_test("login page")
        run = (await api.run(case_id))["id"]
        gate.release(run)
        await until(_counted(receiver), lambda n: n == 1)
        assert receiver.received[0].json == {
            "text": f"Execution #{run} (login page) finished: pass"
        }


async def test_the_dashboard_page_makes_lists_and_sends_again(api: Api) -> None:
    async with Receiver() as receiver, api.dashboard() as browser:
        api.state.db.settings.webhook_allow_private = False
        refused = await browser.post(
            "/webhooks", url="http://10.0.0.7/hook", events="execution.queued"
        )
        assert refused.status_code == 422
        assert "10.0.0.7 is a private or unique-local address" in refused.text
        assert 'value="http://10.0.0.7/hook"' in refused.text  # what was typed is kept
        no_events = await browser.post("/webhooks", url=receiver.url)
        assert no_events.status_code == 422
        assert "events" in no_events.text
        api.state.db.settings.webhook_allow_private = True
        made = await browser.post("/webhooks", url=receiver.url, events="execution.queued")
        assert made.status_code == 201, made.text
        assert "shown this once" in made.text
        (hook,) = (await api.get("/webhooks"))["items"]
        await api.run(await api.gate_test())
        await until(_counted(receiver), lambda n: n == 1)
        (delivery,) = await until(
            lambda: deliveries_of(api, hook["id"]),
            lambda d: bool(d) and d[0]["state"] == "delivered",
        )
        shown = await browser.client.get(f"/webhooks/{hook['id']}")
        assert shown.status_code == 200
        assert "Send again" in shown.text and "#1 200" in shown.text
        again = await browser.post(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
        assert again.status_code == 303
        await until(_counted(receiver), lambda n: n == 2)
        listed = await browser.client.get("/webhooks")
        assert receiver.url in listed.text and 'href="/webhooks"' in listed.text
        forged = await browser.client.post("/webhooks", data={"url": receiver.url})
        assert forged.status_code == 403


async def test_cancel_clear_and_expiry_are_told(api: Api, gate: GateRunner) -> None:
    async with Receiver() as receiver:
        await subscribe(api, receiver.url, events=["execution.cancelled", "execution.expired"])
        case_id = await api.gate_test()
        paused = await api.client.post("/api/v1/executions/queue/pause", headers=api.admin)
        assert paused.status_code == 200
        cancelled, cleared, expiring = [(await api.run(case_id))["id"] for _ in range(2)] + [
            (await api.run(case_id, queue_timeout_seconds=0.2))["id"]
        ]
        answer = await api.client.post(f"/api/v1/executions/{cancelled}/cancel", headers=api.admin)
        assert answer.status_code == 200, answer.text
        await until(_counted(receiver), lambda n: n == 2)  # the cancel, and the expiry
        answer = await api.client.post("/api/v1/executions/queue/clear", headers=api.admin)
        assert answer.status_code == 200, answer.text
        await until(_counted(receiver), lambda n: n == 3)
        assert sorted(receiver.events()) == sorted(
            [
                (cancelled, "execution.cancelled"),
                (expiring, "execution.expired"),
                (cleared, "execution.cancelled"),
            ]
        )


async def test_a_run_ended_by_recovery_is_told(api_only: Api) -> None:
    api = api_only
    hook = await subscribe(api, "http://127.0.0.1:9/hook", events=["execution.finished"])
    run = (await api.run(await api.gate_test()))["id"]
    lost = replace(STAND_IN, worker_id="lost-worker")
    (claimed,) = await queue.settle(api.state.db, lost, [], 1)
    assert claimed.id == run
    assert await queue.expire_workers(api.state.db, ["lost-worker"], max_attempts=1) == 1
    (delivery,) = await deliveries_of(api, hook["id"])
    assert (delivery["execution_id"], delivery["event"]) == (run, "execution.finished")


async def _batch(api: Api, case_id: int, runs: int = 2) -> tuple[int, list[int]]:
    """A batch of `runs` runs of `case_id`: its id and its runs' ids, in line order."""
    made = await api.client.post(
        "/api/v1/batches", json={"test_case_ids": [case_id] * runs}, headers=api.admin
    )
    assert made.status_code == 201, made.text
    queued = made.json()
    return int(queued["batch"]["id"]), sorted(run["id"] for run in queued["executions"])


async def _end(db: Database, run: int, source: Status, target: Status) -> None:
    """End one run in a transaction of its own, as settle, cancel or expiry would."""
    async with db.write() as conn:
        ending = moves.move(source, target, Execution.id == run, completed_at=utcnow())
        await outbox.end_runs(conn, db, ending, outbox.ENDED)


async def _done_or_waiting(db: Database, task: asyncio.Task[None]) -> bool:
    """`task` ended, or a transaction waits for a lock (PostgreSQL)."""
    async with db.read() as conn:
        waits = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
        )
        return task.done() or waits.scalar_one() > 0


async def test_a_batchs_last_two_runs_ended_at_once_finish_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """One transaction ends a batch's first run and stays open; another ends its last
    one meanwhile. Each reads the other's run as not ended unless the later one waits
    for the earlier's commit: exactly one batch.finished."""
    settings = make_settings(postgres_url, tmp_path, webhook_allow_private=True)
    registry = with_gate(Registry(settings), GateRunner())
    second = Database(settings)
    try:
        async for api in start_api(settings, registry, with_worker=False):
            first = api.state.db
            hook = await subscribe(api, "http://127.0.0.1:9/hook", events=["batch.finished"])
            batch_id, (running, waiting) = await _batch(api, await api.gate_test())
            (claimed,) = await claim(api, 1)
            assert claimed.id == running

            async with first.write() as held:
                done = moves.move(
                    Status.RUNNING,
                    Status.COMPLETED,
                    Execution.id == running,
                    result="pass",
                    completed_at=utcnow(),
                )
                await outbox.end_runs(held, first, done, outbox.ENDED)
                ending = asyncio.create_task(
                    _end(second, waiting, Status.PENDING, Status.CANCELLED)
                )
                await until(functools.partial(_done_or_waiting, first, ending), bool)
            async with asyncio.timeout(10):
                await ending
            found = await deliveries_of(api, hook["id"])
            assert [(d["event"], d["batch_id"]) for d in found] == [("batch.finished", batch_id)]
    finally:
        await second.dispose()


async def test_a_test_case_deleted_tells_its_cancelled_runs_and_batch(api_only: Api) -> None:
    api = api_only
    hook = await subscribe(
        api, "http://127.0.0.1:9/hook", events=["execution.cancelled", "batch.finished"]
    )
    case_id = await api.gate_test()
    batch_id, runs = await _batch(api, case_id)
    deleted = await api.client.delete(f"/api/v1/tests/{case_id}", headers=api.admin)
    assert deleted.status_code == 204, deleted.text
    found = await deliveries_of(api, hook["id"])
    assert sorted((d["event"], d["execution_id"] or d["batch_id"]) for d in found) == sorted(
        [("execution.cancelled", run) for run in runs] + [("batch.finished", batch_id)]
    )


async def test_a_cancel_ended_by_a_clean_shutdown_is_told(api_only: Api) -> None:
    api = api_only
    hook = await subscribe(
        api, "http://127.0.0.1:9/hook", events=["execution.cancelled", "batch.finished"]
    )
    batch_id, (run,) = await _batch(api, await api.gate_test(), runs=1)
    (claimed,) = await claim(api, 1)
    answer = await api.client.post(f"/api/v1/executions/{run}/cancel", headers=api.admin)
    assert answer.status_code == 200, answer.text
    assert await deliveries_of(api, hook["id"]) == []  # running: its worker stops it
    assert await queue.release(api.state.db, STAND_IN) == 0
    found = await deliveries_of(api, hook["id"])
    assert sorted((d["event"], d["execution_id"] or d["batch_id"]) for d in found) == [
        ("batch.finished", batch_id),
        ("execution.cancelled", claimed.id),
    ]


async def test_a_disabled_owners_subscription_hears_nothing_and_sends_nothing(
    api_only: Api,
) -> None:
    api = api_only
    member = await api.member()
    hook = await subscribe(
        api,
        "http://127.0.0.1:9/hook",
        headers=member,
        events=["execution.queued", "execution.cancelled"],
    )
    run = (await api.run(await api.gate_test(), headers=member))["id"]
    (queued,) = await deliveries_of(api, hook["id"])
    db = api.state.db

    async def switch(active: bool) -> None:
        answer = await api.client.patch(
            f"/api/v1/users/{hook['user_id']}", json={"is_active": active}, headers=api.admin
        )
        assert answer.status_code == 200, answer.text

    await switch(False)
    cancelled = await api.client.post(f"/api/v1/executions/{run}/cancel", headers=api.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert [d["id"] for d in await deliveries_of(api, hook["id"])] == [queued["id"]]
    assert await deliveries.next_ready(db) is None
    assert await deliveries.claim_due(db, 10) == []
    await switch(True)
    assert await deliveries.next_ready(db) is not None
    (due,) = await deliveries.claim_due(db, 10)
    assert due.id == queued["id"]


async def test_the_dashboard_reads_a_pages_attempts_in_one_query(api_only: Api) -> None:
    api = api_only
    hook = await subscribe(api, "http://127.0.0.1:9/hook", events=["execution.queued"])
    case_id = await api.gate_test()
    for _ in range(3):
        await api.run(case_id)
    db = api.state.db
    for due in await deliveries.claim_due(db, 10):
        failed = deliveries.Answer(500, 1.0, "the receiver answered 500")
        await deliveries.record_answer(db, due, failed)
    read: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "webhook_attempts" in statement:
            read.append(statement)

    async with api.dashboard() as browser:
        event.listen(Engine, "before_cursor_execute", seen)
        try:
            shown = await browser.client.get(f"/webhooks/{hook['id']}")
        finally:
            event.remove(Engine, "before_cursor_execute", seen)
    assert shown.status_code == 200, shown.text
    assert shown.text.count("#1 500") == 3
    assert len(read) == 1, read
