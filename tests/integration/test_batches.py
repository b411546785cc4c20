"""Suites, tags, batches with one verdict, retries and flaky runs, reruns, JUnit reports."""

from __future__ import annotations

from typing import Any

from conftest import Api, claim, finish
from gates import GateRunner
from junit import read_report
from testqueue import queue
from testqueue.vocabulary import Progress, Result
from waiting import allowance, until

V1 = "/api/v1"


async def _post(api: Api, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    response = await api.client.post(f"{V1}{path}", json=body, headers=headers or api.admin)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _gate_case(api: Api, title: str, tags: list[str], **fields: Any) -> int:
    return await api.gate_test(title, tags=tags, **fields)


async def test_tags_are_kept_lower_case_and_filter_the_list(api_only: Api) -> None:
    smoke = await _gate_case(api_only, "login", ["Smoke", "checkout"])
    await _gate_case(api_only, "search", ["search"])
    assert (await api_only.get(f"/tests/{smoke}"))["tags"] == ["checkout", "smoke"]
    found = await api_only.get("/tests?tag=SMOKE")
    assert [t["id"] for t in found["items"]] == [smoke]


async def test_a_suite_is_its_ids_then_its_tags_and_only_its_owner_changes_it(
    api_only: Api,
) -> None:
    first = await _gate_case(api_only, "a", ["smoke"])
    second = await _gate_case(api_only, "b", ["smoke", "slow"])
    third = await _gate_case(api_only, "c", [])
    member = await api_only.member("mae")
    suite = await _post(
        api_only, "/suites", {"name": "smoke", "test_case_ids": [third], "tags": ["smoke"]}, member
    )
    chosen = await api_only.get(f"/suites/{suite['id']}/selection")
    assert [c["id"] for c in chosen] == [third, first, second]

    other = await api_only.member("otto")
    refused = await api_only.client.put(
        f"{V1}/suites/{suite['id']}", json={"tag_mode": "all"}, headers=other
    )
    assert refused.status_code == 403
    changed = await api_only.client.put(
        f"{V1}/suites/{suite['id']}",
        json={"tags": ["smoke", "slow"], "tag_mode": "all"},
        headers=api_only.admin,
    )
    assert changed.status_code == 200, changed.text
    chosen = await api_only.get(f"/suites/{suite['id']}/selection")
    assert [c["id"] for c in chosen] == [third, second]
    duplicate = await api_only.client.post(
        f"{V1}/suites", json={"name": "smoke", "tags": ["x"]}, headers=member
    )
    assert duplicate.status_code == 409


async def test_a_batch_queues_in_order_in_one_go_and_says_how_it_went(
    api: Api, gate: GateRunner
) -> None:
    ids = [await _gate_case(api, f"case {n}", ["nightly"]) for n in range(3)]
    made = await _post(api, "/batches", {"tags": ["nightly"], "priority": 3})
    batch = made["batch"]
    assert batch["name"] == "tagged nightly" and batch["total"] == 3
    assert [e["test_case_id"] for e in made["executions"]] == ids
    assert [e["queue_position"] for e in made["executions"]] == [1, 2, 3]
    await gate.wait_started(3)
    running = await api.get(f"/batches/{batch['id']}")
    assert running["status"] == "running" and running["verdict"] is None
    assert running["counts"]["running"] == 3 and running["done"] == 0
    gate.open_all.set()
    done = await until(
        lambda: api.get(f"/batches/{batch['id']}"), lambda b: b["verdict"] is not None
    )
    assert (done["status"], done["verdict"], done["done"]) == ("completed", "pass", 3)
    assert done["counts"]["passed"] == 3
    assert done["finished_at"] is not None and done["duration_seconds"] >= 0
    for row in done["executions"]:  # ordinary executions for every other route
        assert (await api.get(f"/executions/{row['id']}"))["batch_id"] == batch["id"]
    listed = await api.get("/batches")
    assert listed["total"] == 1 and listed["items"][0]["verdict"] == "pass"


async def test_the_verdict_is_pass_only_when_everything_passed(api_only: Api) -> None:
    cases = [await api_only.gate_test(f"t{n}") for n in range(4)]
    for ending, verdict in (
        ([Result.PASS, Result.TIMEOUT, Result.ERROR, Result.FAIL], "fail"),
        ([Result.PASS, Result.TIMEOUT, Result.ERROR, Result.PASS], "error"),
        ([Result.PASS, Result.TIMEOUT, Result.PASS, Result.PASS], "timeout"),
        ([Result.PASS] * 4, "pass"),
    ):
        batch = (await _post(api_only, "/batches", {"test_case_ids": cases}))["batch"]
        for item, result in zip(await claim(api_only, 4), ending, strict=True):
            await finish(api_only, item, result)
        summary = await api_only.get(f"/batches/{batch['id']}")
        assert (summary["status"], summary["verdict"]) == ("completed", verdict)


async def test_cancelling_a_batch_cancels_the_waiting_and_stops_the_running(
    api: Api, gate: GateRunner
) -> None:
    case = await api.gate_test("held")
    batch = (await _post(api, "/batches", {"test_case_ids": [case] * 7}))["batch"]
    await gate.wait_started(5)
    member = await api.member("nia")
    refused = await api.client.post(f"{V1}/batches/{batch['id']}/cancel", headers=member)
    assert refused.status_code == 403
    within = allowance(1.0)
    began = api.state.db.wakeups  # the cancel reaches the runs through the wake-ups
    assert began is not None
    summary = await _post(api, f"/batches/{batch['id']}/cancel", None)
    await gate.wait_for(lambda: not gate.running, timeout=within)
    final = await until(
        lambda: api.get(f"/batches/{batch['id']}"), lambda b: b["status"] == "cancelled"
    )
    assert summary["counts"]["cancelled"] >= 2
    assert (final["verdict"], final["counts"]["cancelled"]) == ("cancelled", 7)
    again = await api.client.post(f"{V1}/batches/{batch['id']}/cancel", headers=api.admin)
    assert again.status_code == 409


async def test_a_retried_run_goes_first_in_its_priority_and_keeps_each_attempt(
    api_only: Api,
) -> None:
    flaky = await api_only.gate_test("flaky", retries=2, retry_on=["fail"])
    other = await api_only.gate_test("other")
    first = (await api_only.run(flaky))["id"]
    behind = [(await api_only.run(other))["id"] for _ in range(2)]
    (claimed,) = await claim(api_only, 1)
    log = Progress(first, attempt=1, log="attempt one failed\n")
    await finish(api_only, claimed, Result.FAIL, error_message="nope", progress=log, retry=True)

    detail = await api_only.get(f"/executions/{first}")
    assert (detail["status"], detail["attempt"], detail["retried"]) == ("pending", 2, 1)
    assert detail["queue_position"] == 1, "back at the front of its priority"
    status = await api_only.get("/executions/queue/status")
    assert [q["execution_id"] for q in status["queue"]] == [first, *behind]

    (again,) = await claim(api_only, 1)
    assert (again.id, again.attempt) == (first, 2)
    await finish(api_only, again, Result.PASS)
    detail = await api_only.get(f"/executions/{first}")
    assert (detail["result"], detail["flaky"], detail["attempt"]) == ("pass", True, 2)
    attempts = await api_only.get(f"/executions/{first}/attempts")
    assert [(a["attempt"], a["status"], a["result"]) for a in attempts] == [
        (1, "retried", "fail"),
        (2, "completed", "pass"),
    ]
    old_log = await api_only.client.get(
        f"{V1}/executions/{first}/log?attempt=1", headers=api_only.admin
    )
    assert old_log.text == "attempt one failed\n"


async def test_results_not_asked_for_and_spent_retries_end_the_run(api_only: Api) -> None:
    case = await api_only.gate_test("strict", retries=1, retry_on=["timeout"])
    (await api_only.run(case))["id"]
    (claimed,) = await claim(api_only, 1)
    assert not claimed.ended(Result.FAIL, 1, "x").retry, "fail is not among its retry_on"
    assert claimed.ended(Result.TIMEOUT, None, "x").retry
    await finish(api_only, claimed, Result.TIMEOUT, retry=True)
    (again,) = await claim(api_only, 1)
    assert not again.ended(Result.TIMEOUT, None, "x").retry, "its one retry is spent"


async def test_a_lost_worker_never_uses_up_a_retry(api_only: Api) -> None:
    case = await api_only.gate_test("lost", retries=1)
    execution = (await api_only.run(case))["id"]
    ghost = queue.Claimer("ghost", default_slots=5, lease_ttl_s=0.01, capacity=1)
    await queue.settle(api_only.state.db, ghost, [], 1)
    probe = queue.Claimer("probe", default_slots=5, lease_ttl_s=5, capacity=0)

    async def recovered() -> int:
        return (await queue.heartbeat(api_only.state.db, probe, [], 3)).recovered

    await until(recovered, lambda n: n == 1)
    detail = await api_only.get(f"/executions/{execution}")
    assert (detail["attempt"], detail["retried"], detail["status"]) == (2, 0, "pending")
    attempts = await api_only.get(f"/executions/{execution}/attempts")
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "lost"), (2, "pending")]


async def test_rerun_failed_makes_a_linked_batch_one_step_higher(api_only: Api) -> None:
    cases = [await api_only.gate_test(f"r{n}") for n in range(3)]
    batch = (await _post(api_only, "/batches", {"test_case_ids": cases, "priority": 4}))["batch"]
    for item, result in zip(
        await claim(api_only, 3), [Result.PASS, Result.FAIL, Result.TIMEOUT], strict=True
    ):
        await finish(api_only, item, result)
    again = await _post(api_only, f"/batches/{batch['id']}/rerun", {"only": "failed"})
    assert again["batch"]["rerun_of"] == batch["id"]
    assert [(e["test_case_id"], e["priority"]) for e in again["executions"]] == [
        (cases[1], 3),
        (cases[2], 3),
    ]
    everything = await _post(
        api_only, f"/batches/{batch['id']}/rerun", {"only": "all", "priority": 1}
    )
    assert [e["priority"] for e in everything["executions"]] == [1, 1, 1]


async def test_a_single_run_may_join_a_batch(api_only: Api) -> None:
    case = await api_only.gate_test("joins")
    batch = (await _post(api_only, "/batches", {"test_case_ids": [case]}))["batch"]
    run = await api_only.run(case, batch_id=batch["id"])
    detail = await api_only.get(f"/batches/{batch['id']}")
    assert detail["total"] == 2 and run["id"] in [e["id"] for e in detail["executions"]]
    missing = await api_only.client.post(
        f"{V1}/executions/tests/{case}/run", json={"batch_id": 999}, headers=api_only.admin
    )
    assert missing.status_code == 404


async def test_junit_reports_validate_and_count_what_happened(api_only: Api) -> None:
    cases = [await api_only.gate_test(f"j{n}\x01") for n in range(5)]
    batch = (await _post(api_only, "/batches", {"test_case_ids": cases, "name": "release"}))[
        "batch"
    ]
    claimed = await claim(api_only, 4)
    steps = Progress(claimed[0].id, log="tail of the log\n")
    await finish(api_only, claimed[0], Result.PASS, progress=steps)
    await finish(api_only, claimed[1], Result.FAIL, error_message="expected 2 <got> 3")
    await finish(api_only, claimed[2], Result.ERROR, error_message="could not start")
    await finish(api_only, claimed[3], Result.TIMEOUT, error_message="timed out after 1 s")
    await api_only.client.post(f"{V1}/batches/{batch['id']}/cancel", headers=api_only.admin)

    response = await api_only.client.get(
        f"{V1}/batches/{batch['id']}/junit.xml", headers=api_only.admin
    )
    assert response.headers["content-type"].startswith("application/xml")
    report = read_report(response.content)
    (suite,) = report["testsuite"]
    assert (suite["@name"], suite["@tests"], suite["@failures"]) == ("release", 5, 1)
    assert (suite["@errors"], suite["@skipped"]) == (2, 1)
    first = suite["testcase"][0]
    assert "tail of the log" in first["system-out"][0]
    failure = suite["testcase"][1]["failure"][0]
    assert failure["@message"] == "expected 2 <got> 3"

    one = await api_only.client.get(
        f"{V1}/executions/{claimed[3].id}/junit.xml", headers=api_only.admin
    )
    error = read_report(one.content)["testsuite"][0]["testcase"][0]["error"][0]
    assert error["@type"] == "timeout"
