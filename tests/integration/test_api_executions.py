"""Executions over HTTP: run, read, move, cancel, clear, pause, change the slots.

Most tests use `api_only` and a stand-in worker (`queue.settle` with its own
claimer) to move runs to running and completed exactly when the test says.
The tests that need a live dispatcher hold its slots with the gate runner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from conftest import claim, finish
from gates import GateRunner
from testqueue.vocabulary import Progress, Result, StepRecord

EXECUTIONS = "/api/v1/executions"
RUN_FIELDS = {
    "id",
    "test_case_id",
    "status",
    "priority",
    "queue_position",
    "message",
    "deduplicated",
}
DETAIL_FIELDS = {
    "id",
    "test_case_id",
    "user_id",
    "status",
    "result",
    "priority",
    "queue_position",
    "attempt",
    "queued_at",
    "started_at",
    "completed_at",
    "duration_seconds",
    "wait_seconds",
    "run_seconds",
    "total_steps",
    "passed_steps",
    "failed_steps",
    "skipped_steps",
    "steps",
    "error_message",
    "browser",
    "environment",
    "base_url",
    "triggered_by",
    "exit_code",
}


async def post(api: Any, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    return await api.client.post(f"{EXECUTIONS}{path}", headers=headers or api.admin, **kw)


async def line(api: Any) -> list[tuple[int, int, int]]:
    """(execution id, priority, position) of every pending run, in order."""
    status = await api.get("/executions/queue/status")
    return [(q["execution_id"], q["priority"], q["queue_position"]) for q in status["queue"]]


async def statuses(api: Any) -> dict[int, str]:
    page = await api.get("/executions?limit=500")
    return {item["id"]: item["status"] for item in page["items"]}


async def test_run_is_queued_with_its_position_and_a_message(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    response = await post(api, f"/tests/{test_id}/run")
    assert response.status_code == 201, response.text
    first = response.json()
    assert set(first) == RUN_FIELDS
    assert (first["test_case_id"], first["status"], first["priority"]) == (test_id, "pending", 5)
    assert first["queue_position"] == 1
    assert first["message"] == f"execution {first['id']} queued at position 1"
    second = await api.run(test_id)
    assert (second["queue_position"], second["id"]) == (2, first["id"] + 1)
    assert await line(api) == [(first["id"], 5, 1), (second["id"], 5, 2)]


async def test_priority_words_numbers_and_the_test_case_default(api_only: Any) -> None:
    api = api_only
    medium = await api.command_test(["true"])
    high = await api.command_test(["true"], priority="high")
    low = await api.command_test(["true"], priority="low")
    asked: list[tuple[int, dict[str, Any], int]] = [
        (medium, {"priority": "high"}, 1),
        (medium, {"priority": "Medium"}, 5),
        (medium, {"priority": "low"}, 10),
        (medium, {"priority": 3}, 3),
        (medium, {"priority": None}, 5),
        (medium, {}, 5),
        (high, {}, 1),
        (low, {}, 10),
        (low, {"priority": 2}, 2),
    ]
    for test_id, body, priority in asked:
        run = await api.run(test_id, **body)
        assert run["priority"] == priority, (body, run)
        assert (await api.get(f"/executions/{run['id']}"))["priority"] == priority


async def test_bulk_run_queues_in_the_order_given_or_not_at_all(api_only: Any) -> None:
    api = api_only
    a = await api.command_test(["true"], title="a")
    b = await api.command_test(["true"], title="b")
    response = await post(api, "/bulk", json={"test_case_ids": [b, a, b], "priority": "high"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"] == "3 executions queued"
    queued = body["executions"]
    assert [q["test_case_id"] for q in queued] == [b, a, b]
    assert [q["queue_position"] for q in queued] == [1, 2, 3]
    assert [q["priority"] for q in queued] == [1, 1, 1]
    assert queued[0]["id"] < queued[1]["id"] < queued[2]["id"]

    for ids, code, detail in [
        ([a, 999_999, b], 404, "test case 999999 does not exist"),
        ([], 422, "test_case_ids"),
    ]:
        response = await post(api, "/bulk", json={"test_case_ids": ids})
        assert response.status_code == code, response.text
        assert detail in str(response.json()["detail"])
    assert (await api.get("/executions"))["total"] == 3


async def test_bulk_positions_match_the_line_across_mixed_priorities(api_only: Any) -> None:
    api = api_only
    medium = await api.command_test(["true"])
    high = await api.command_test(["true"], priority="high")
    low = await api.command_test(["true"], priority="low")
    for test_id in (medium, high, medium, low):
        await api.run(test_id)
    response = await post(api, "/bulk", json={"test_case_ids": [low, high, medium, high, medium]})
    assert response.status_code == 201, response.text
    queued = response.json()["executions"]
    # Before them: high 1, medium 2, low 1; among them priorities 10, 1, 5, 1, 5.
    assert [q["queue_position"] for q in queued] == [9, 2, 6, 3, 7]
    for q in queued:
        detail = await api.get(f"/executions/{q['id']}")
        assert detail["queue_position"] == q["queue_position"], q


async def test_a_run_takes_its_base_url_from_the_request_else_from_the_test_data(
    api_only: Any,
) -> None:
    api = api_only
    site = await api.command_test(["true"], test_data={"base_url": "https://site.example.com"})
    bare = await api.command_test(["true"])
    given = "https://given.example.com"
    one = await api.run(site)
    asked = await api.run(site, base_url=given)
    none = await api.run(bare)
    response = await post(api, "/bulk", json={"test_case_ids": [site, bare]})
    assert response.status_code == 201, response.text
    many = response.json()["executions"]
    runs = [one["id"], asked["id"], none["id"], many[0]["id"], many[1]["id"]]
    urls = [(await api.get(f"/executions/{run}"))["base_url"] for run in runs]
    assert urls == ["https://site.example.com", given, None, "https://site.example.com", None]


async def test_priority_change_moves_a_pending_run_and_only_a_pending_one(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    member = await api.member("mo")
    first, second, third, fourth = [(await api.run(test_id))["id"] for _ in range(4)]

    response = await api.client.patch(
        f"{EXECUTIONS}/{fourth}", json={"priority": "high"}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    assert (response.json()["priority"], response.json()["queue_position"]) == (1, 1)
    assert await line(api) == [(fourth, 1, 1), (first, 5, 2), (second, 5, 3), (third, 5, 4)]

    response = await api.client.patch(
        f"{EXECUTIONS}/{first}", json={"priority": 10}, headers=api.admin
    )
    assert response.json()["queue_position"] == 4
    assert await line(api) == [(fourth, 1, 1), (second, 5, 2), (third, 5, 3), (first, 10, 4)]

    refused = await api.client.patch(f"{EXECUTIONS}/{third}", json={"priority": 1}, headers=member)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == f"execution {third} belongs to another user"

    (running,) = await claim(api, 1)
    assert running.id == fourth
    await api.client.post(f"{EXECUTIONS}/{second}/cancel", headers=api.admin)
    for execution_id, now in [(fourth, "running"), (second, "cancelled")]:
        response = await api.client.patch(
            f"{EXECUTIONS}/{execution_id}", json={"priority": 1}, headers=api.admin
        )
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == (
            f"execution {execution_id} is {now}; only a pending one can change priority"
        )
    assert await line(api) == [(third, 5, 1), (first, 10, 2)]


async def test_cancel_a_pending_run_once_and_only_your_own(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    member = await api.member("max")
    admins = (await api.run(test_id))["id"]
    members = (await api.run(test_id, headers=member))["id"]

    refused = await post(api, f"/{admins}/cancel", headers=member)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == f"execution {admins} belongs to another user"
    assert await statuses(api) == {admins: "pending", members: "pending"}

    response = await post(api, f"/{members}/cancel", headers=member)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": members,
        "status": "cancelled",
        "message": f"execution {members} cancelled",
    }
    again = await post(api, f"/{members}/cancel", headers=member)
    assert again.status_code == 409, again.text
    assert "already cancelled" in again.json()["detail"]

    (claimed,) = await claim(api, 1)
    await finish(api, claimed, Result.PASS)
    ended = await post(api, f"/{admins}/cancel")
    assert ended.status_code == 409
    assert ended.json()["detail"] == (
        f"execution {admins} is already completed; only pending or running ones can be cancelled"
    )
    missing = await post(api, "/424242/cancel")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "execution 424242 does not exist"
    assert await statuses(api) == {admins: "completed", members: "cancelled"}


async def test_delete_removes_only_finished_runs_and_only_your_own(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    member = await api.member("mick")
    admins = (await api.run(test_id))["id"]
    members, pending = [(await api.run(test_id, headers=member))["id"] for _ in range(2)]
    (claimed,) = await claim(api, 1)
    progress = Progress(admins, log="output\n")
    await finish(api, claimed, Result.PASS, progress=progress)
    await post(api, f"/{members}/cancel", headers=member)

    others = await api.client.delete(f"{EXECUTIONS}/{admins}", headers=member)
    assert others.status_code == 403, others.text
    assert others.json()["detail"] == f"execution {admins} belongs to another user"
    waiting = await api.client.delete(f"{EXECUTIONS}/{pending}", headers=member)
    assert waiting.status_code == 409, waiting.text
    assert "cancel it before deleting it" in waiting.json()["detail"]
    assert await statuses(api) == {admins: "completed", members: "cancelled", pending: "pending"}

    for execution_id, headers in [(members, member), (admins, api.admin)]:
        response = await api.client.delete(f"{EXECUTIONS}/{execution_id}", headers=headers)
        assert response.status_code == 204, response.text
    assert await statuses(api) == {pending: "pending"}
    log = await api.client.get(f"{EXECUTIONS}/{admins}/log", headers=api.admin)
    assert log.status_code == 404


async def test_history_filters_and_pages_with_exact_totals(api_only: Any) -> None:
    api = api_only
    member = await api.member("meg")
    member_id = (await api.get("/users/me", headers=member))["id"]
    admin_id = (await api.get("/users/me"))["id"]
    a = await api.command_test(["true"], title="a")
    b = await api.command_test(["true"], title="b")
    passed, failed, running = [(await api.run(a))["id"] for _ in range(3)]
    pending_a = (await api.run(a, headers=member))["id"]
    pending_b = [(await api.run(b, headers=member))["id"] for _ in range(3)]
    first, second, third = await claim(api, 3)
    await finish(api, first, Result.PASS, exit_code=0)
    await finish(api, second, Result.FAIL, exit_code=1)

    def ids(page: Any) -> list[int]:
        return [item["id"] for item in page["items"]]

    everything = await api.get("/executions")
    assert everything["total"] == 7
    assert ids(everything) == [*pending_b[::-1], pending_a, running, failed, passed]
    expected = {
        "status=pending": [*pending_b[::-1], pending_a],
        "status=running": [running],
        "status=completed": [failed, passed],
        "status=cancelled": [],
        "result=pass": [passed],
        "result=fail": [failed],
        f"test_case_id={b}": pending_b[::-1],
        f"user_id={member_id}": [*pending_b[::-1], pending_a],
        f"user_id={admin_id}&status=completed&result=fail": [failed],
        f"test_case_id={a}&user_id={member_id}": [pending_a],
    }
    for query, want in expected.items():
        page = await api.get(f"/executions?{query}")
        assert (ids(page), page["total"]) == (want, len(want)), query

    page = await api.get("/executions?limit=2&offset=3")
    assert (ids(page), page["total"], page["limit"], page["offset"]) == (
        [pending_a, running],
        7,
        2,
        3,
    )
    page = await api.get(f"/executions?test_case_id={b}&limit=2&offset=2")
    assert (ids(page), page["total"]) == ([pending_b[0]], 3)
    assert third.id == running


async def test_detail_log_and_timings_through_a_whole_run(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["sh", "-c", "exit 1"], title="detailed")
    ahead = (await api.run(test_id))["id"]
    run = await api.run(
        test_id,
        priority="low",
        browser="firefox",
        environment="staging",
        base_url="https://staging.example.com",
        triggered_by="ci",
    )
    admin_id = (await api.get("/users/me"))["id"]
    pending = await api.get(f"/executions/{run['id']}")
    assert set(pending) >= DETAIL_FIELDS
    assert {k: pending[k] for k in ("status", "result", "priority", "queue_position")} == {
        "status": "pending",
        "result": None,
        "priority": 10,
        "queue_position": 2,
    }
    assert (pending["test_case_id"], pending["user_id"], pending["attempt"]) == (
        test_id,
        admin_id,
        1,
    )
    assert (pending["browser"], pending["environment"], pending["triggered_by"]) == (
        "firefox",
        "staging",
        "ci",
    )
    assert pending["base_url"] == "https://staging.example.com"
    assert pending["queued_at"].endswith("Z")
    assert pending["started_at"] is pending["completed_at"] is pending["duration_seconds"] is None
    assert pending["wait_reason"] == "no worker is running; it starts when one signs in"
    assert pending["steps"] == [] and pending["test_case_title"] == "detailed"
    empty_log = await api.client.get(f"{EXECUTIONS}/{run['id']}/log", headers=api.admin)
    assert (empty_log.status_code, empty_log.text) == (200, "")

    await post(api, f"/{ahead}/cancel")
    (claimed,) = await claim(api, 1)
    assert claimed.id == run["id"]
    running = await api.get(f"/executions/{run['id']}")
    assert (running["status"], running["queue_position"], running["wait_reason"]) == (
        "running",
        None,
        None,
    )
    assert running["started_at"] is not None and running["wait_seconds"] >= 0
    steps = [
        StepRecord(1, "goto", "pass", "open", 12.5),
        StepRecord(2, "click", "fail", "press go", 3.0, "no such button"),
    ]
    progress = Progress(run["id"], log="line one\nline two\n", steps=steps)
    await finish(api, claimed, Result.FAIL, exit_code=1, steps=(2, 1, 1, 0), progress=progress)

    done = await api.get(f"/executions/{run['id']}")
    assert (done["status"], done["result"], done["exit_code"]) == ("completed", "fail", 1)
    assert (done["total_steps"], done["passed_steps"], done["failed_steps"]) == (2, 1, 1)
    assert done["skipped_steps"] == 0
    assert [(s["number"], s["action"], s["result"]) for s in done["steps"]] == [
        (1, "goto", "pass"),
        (2, "click", "fail"),
    ]
    assert done["steps"][1]["error_message"] == "no such button"
    assert done["queue_position"] is None
    stamps = [datetime.fromisoformat(done[k]) for k in ("queued_at", "started_at", "completed_at")]
    assert stamps == sorted(stamps)
    assert done["duration_seconds"] == pytest.approx(
        done["wait_seconds"] + done["run_seconds"], abs=1e-5
    )
    log = await api.client.get(f"{EXECUTIONS}/{run['id']}/log", headers=api.admin)
    assert (log.status_code, log.text) == (200, "line one\nline two\n")
    assert log.headers["content-type"].startswith("text/plain")
    for path in ("/424242", "/424242/log"):
        missing = await api.client.get(f"{EXECUTIONS}{path}", headers=api.admin)
        assert missing.status_code == 404, path
        assert missing.json()["detail"] == "execution 424242 does not exist"


async def test_clear_is_for_admins_and_cancels_exactly_the_pending_runs(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    member = await api.member("mel")
    ids = [(await api.run(test_id))["id"] for _ in range(5)]
    ids.append((await api.run(test_id, headers=member))["id"])
    (running,) = await claim(api, 1)

    refused = await post(api, "/queue/clear", headers=member)
    assert refused.status_code == 403, refused.text
    assert "admin" in refused.json()["detail"]
    assert list((await statuses(api)).values()).count("pending") == 5

    response = await post(api, "/queue/clear")
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "5 pending executions cancelled", "removed_count": 5}
    now = await statuses(api)
    assert now == {i: "running" if i == running.id else "cancelled" for i in ids}
    again = await post(api, "/queue/clear")
    assert again.json()["removed_count"] == 0


async def test_pause_and_resume_are_for_admins_and_say_why_runs_wait(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    member = await api.member("pat")
    waiting = (await api.run(test_id))["id"]
    for path in ("/queue/pause", "/queue/resume"):
        refused = await post(api, path, headers=member)
        assert refused.status_code == 403, (path, refused.text)
    assert (await api.get("/executions/queue/settings"))["paused"] is False

    paused = await post(api, "/queue/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    reason = "the queue is paused; it starts when an admin resumes it"
    assert (await api.get(f"/executions/{waiting}"))["wait_reason"] == reason
    status = await api.get("/executions/queue/status")
    assert status["paused"] is True
    assert [q["wait_reason"] for q in status["queue"]] == [reason]
    assert await claim(api, 1) == []

    resumed = await post(api, "/queue/resume", headers=api.admin)
    assert resumed.json()["paused"] is False
    assert (await api.get(f"/executions/{waiting}"))["wait_reason"] != reason
    assert [c.id for c in await claim(api, 1)] == [waiting]


async def test_admin_changes_the_slots_at_runtime(api: Any, gate: GateRunner) -> None:
    member = await api.member("sam")
    one = await api.client.put(
        f"{EXECUTIONS}/queue/settings", json={"max_concurrent": 1}, headers=api.admin
    )
    assert one.status_code == 200, one.text
    assert one.json() == {"max_concurrent": 1, "max_concurrent_default": 5, "paused": False}
    test_id = await api.gate_test()
    ids = [(await api.run(test_id))["id"] for _ in range(4)]
    await gate.wait_started(1)
    status = await api.get("/executions/queue/status")
    assert (status["active_count"], status["queued_count"], status["max_concurrent"]) == (1, 3, 1)

    for body, code in [({"max_concurrent": 8}, 403), ({"max_concurrent": 0}, 422), ({}, 422)]:
        headers = member if code == 403 else api.admin
        response = await api.client.put(f"{EXECUTIONS}/queue/settings", json=body, headers=headers)
        assert response.status_code == code, response.text
    assert (await api.get("/executions/queue/settings"))["max_concurrent"] == 1

    three = await api.client.put(
        f"{EXECUTIONS}/queue/settings", json={"max_concurrent": 3}, headers=api.admin
    )
    assert three.json()["max_concurrent"] == 3
    await gate.wait_started(3)
    status = await api.get("/executions/queue/status")
    assert [a["execution_id"] for a in status["active"]] == ids[:3]
    assert [q["execution_id"] for q in status["queue"]] == ids[3:]
    assert gate.max_running == 3

    back = await api.client.put(
        f"{EXECUTIONS}/queue/settings", json={"max_concurrent": None}, headers=api.admin
    )
    assert back.json()["max_concurrent"] == 5
    await gate.wait_started(4)
    gate.open_all.set()


async def test_statistics_active_and_workers_show_the_running_runs(
    api: Any, gate: GateRunner
) -> None:
    member = await api.member("sue")
    test_id = await api.gate_test()
    ids = [(await api.run(test_id))["id"] for _ in range(2)]
    await gate.wait_started(2)

    stats = await api.get("/executions/queue/statistics", headers=member)
    assert (stats["is_running"], stats["paused"], stats["max_concurrent"]) == (True, False, 5)
    assert stats["check_interval"] == api.state.settings.queue_check_interval
    assert stats["queue_status"] == {
        "active_count": 2,
        "queued_count": 0,
        "max_concurrent": 5,
        "is_under_limit": True,
    }
    assert stats["executions_by_status"] == {
        "pending": 0,
        "running": 2,
        "completed": 0,
        "cancelled": 0,
        "expired": 0,
    }
    assert stats["live_workers"] == 1
    active = await api.get("/executions/queue/active", headers=member)
    # The seed system's shape: counts beside the list under `executions`.
    assert (active["active_count"], active["max_concurrent"]) == (2, 5)
    assert [a["execution_id"] for a in active["executions"]] == ids
    (worker,) = await api.get("/executions/queue/workers", headers=member)
    assert (worker["running"], worker["live"]) == (ids, True)
    assert worker["capacity"] == api.state.settings.worker_capacity

    refused = await post(api, f"/{ids[0]}/cancel", headers=member)
    assert refused.status_code == 403, refused.text
    assert set(gate.running) == set(ids)
    cancelled = await post(api, f"/{ids[0]}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert [
        a["execution_id"] for a in (await api.get("/executions/queue/active"))["executions"]
    ] == ids[1:]
    gate.open_all.set()


async def test_queue_status_pages_the_line_with_exact_counts(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["true"])
    priorities = [5, 1, 10, 5, 1, 3, 7]
    ids = [(await api.run(test_id, priority=p))["id"] for p in priorities]
    (running,) = await claim(api, 1)
    order = sorted(zip(priorities, ids, strict=True))
    assert running.id == order[0][1]
    waiting = [execution_id for _, execution_id in order[1:]]

    page = await api.get("/executions/queue/status?limit=3&offset=2")
    assert (page["queued_count"], page["active_count"], page["limit"], page["offset"]) == (
        6,
        1,
        3,
        2,
    )
    assert [(q["execution_id"], q["queue_position"]) for q in page["queue"]] == [
        (waiting[2], 3),
        (waiting[3], 4),
        (waiting[4], 5),
    ]
    assert [a["execution_id"] for a in page["active"]] == [running.id]
    for execution_id, position in [(waiting[2], 3), (waiting[5], 6)]:
        assert (await api.get(f"/executions/{execution_id}"))["queue_position"] == position
    counts_only = await api.get("/executions/queue/status?limit=0")
    assert (counts_only["queue"], counts_only["queued_count"]) == ([], 6)
    tail = await api.get("/executions/queue/status?offset=5")
    assert [(q["execution_id"], q["queue_position"]) for q in tail["queue"]] == [(waiting[5], 6)]


async def test_the_seed_systems_shapes_are_kept(api_only: Any) -> None:
    """`status=failed`, `step_number` / `step_description`, and `console_log` in the detail."""
    api = api_only
    test_id = await api.command_test(["true"])
    ids = [(await api.run(test_id))["id"] for _ in range(5)]
    claimed = await claim(api, 5)
    long_log = "".join(f"line {n}\n" for n in range(5000))
    steps = [StepRecord(number=1, action="goto", result="pass", description="open the shop")]
    progress = Progress(ids[0], log=long_log, steps=steps)
    outcomes = [Result.FAIL, Result.ERROR, Result.TIMEOUT, Result.PASS, Result.FAIL]
    for item, result in zip(claimed, outcomes, strict=True):
        extra = {"progress": progress, "steps": (1, 1, 0, 0)} if item.id == ids[0] else {}
        await finish(api, item, result, **extra)

    failed = await api.get("/executions?status=failed")
    assert sorted(item["id"] for item in failed["items"]) == sorted(
        i for i, r in zip(ids, outcomes, strict=True) if r != Result.PASS
    )
    assert failed["total"] == 4
    detail = await api.get(f"/executions/{ids[0]}")
    (step,) = detail["steps"]
    assert (step["step_number"], step["step_description"]) == (1, "open the shop")
    assert detail["console_log"] == long_log[-20_000:]
    assert (await api.get(f"/executions/{ids[1]}"))["console_log"] is None
    listed = await api.get("/executions?limit=1")
    assert listed["items"][0]["console_log"] is None, "the log tail is for the detail only"
