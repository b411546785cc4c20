"""Command test cases through the whole queue: log while running, cancel, timeout."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import STAND_IN, Api
from testqueue import queue
from testqueue.vocabulary import Progress, Result, StepRecord
from waiting import allowance, until


def _gated(gate: Path, before: str = "echo first") -> list[str]:
    return ["sh", "-c", f'{before}; while [ ! -e "{gate}" ]; do sleep 0.02; done; echo last']


async def test_log_is_readable_while_the_run_goes_on(api: Api, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    test_id = await api.command_test(_gated(gate))
    execution_id = (await api.run(test_id))["id"]

    async def log() -> str:
        response = await api.client.get(f"/api/v1/executions/{execution_id}/log", headers=api.admin)
        return response.text

    assert await until(log, lambda text: text == "first\n")
    assert (await api.get(f"/executions/{execution_id}"))["status"] == "running"
    gate.touch()
    detail = await until(
        lambda: api.get(f"/executions/{execution_id}"), lambda d: d["status"] == "completed"
    )
    assert detail["result"] == "pass"
    assert detail["exit_code"] == 0
    assert await log() == "first\nlast\n"
    assert detail["run_seconds"] > 0 and detail["wait_seconds"] >= 0


async def test_cancel_of_a_running_command_answers_cancelled_within_a_second(
    api: Api,
    tmp_path: Path,
) -> None:
    test_id = await api.command_test(
        ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]
    )
    execution_id = (await api.run(test_id))["id"]

    async def log() -> str:
        response = await api.client.get(f"/api/v1/executions/{execution_id}/log", headers=api.admin)
        return response.text

    await until(log, lambda text: text == "up\n")
    within = allowance(1.0)
    begin = time.monotonic()
    response = await api.client.post(f"/api/v1/executions/{execution_id}/cancel", headers=api.admin)
    assert time.monotonic() - begin < within
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    detail = await api.get(f"/executions/{execution_id}")
    assert detail["status"] == "cancelled"
    assert detail["result"] is None
    assert (await api.get("/executions/queue/status"))["active_count"] == 0


async def test_timeout_of_a_command_is_recorded(api: Api) -> None:
    test_id = await api.command_test(["sleep", "30"], timeout_seconds=0.5)
    execution_id = (await api.run(test_id))["id"]
    detail = await until(
        lambda: api.get(f"/executions/{execution_id}"), lambda d: d["status"] == "completed"
    )
    assert detail["result"] == "timeout"
    assert "timed out after 0.5 s" in detail["error_message"]
    assert detail["run_seconds"] < allowance(3), "stopped at its 0.5 s, long before its 30 s"


async def test_an_unknown_runner_kind_is_refused_when_saved(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/tests",
        json={"title": "unknown kind", "runner": "nonesuch"},
        headers=api.admin,
    )
    assert response.status_code == 422
    assert "runner 'nonesuch' is unknown" in response.json()["detail"]


async def test_a_run_after_an_edit_runs_the_edited_command(api: Api) -> None:
    test_id = await api.command_test(["echo", "before"])

    async def run_log() -> str:
        execution_id = (await api.run(test_id))["id"]
        await until(
            lambda: api.get(f"/executions/{execution_id}"), lambda d: d["status"] == "completed"
        )
        response = await api.client.get(f"/api/v1/executions/{execution_id}/log", headers=api.admin)
        return str(response.text)

    assert await run_log() == "before\n"
    response = await api.client.put(
        f"/api/v1/tests/{test_id}", json={"command": ["echo", "after"]}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    assert await run_log() == "after\n"


async def test_claims_carry_their_test_cases_when_the_kept_ones_are_dropped(
    api_only: Api,
) -> None:
    """A claim that reads one test case anew and keeps another must hand out both."""
    cases = queue.CaseCache(size=1)
    db = api_only.state.db
    first = await api_only.command_test(["echo", "first"])
    second = await api_only.command_test(["echo", "second"])
    await api_only.run(first)
    (kept,) = await queue.settle(db, STAND_IN, [], 1, cases)
    assert kept.case is not None and kept.case.command == ["echo", "first"]
    await api_only.run(first)
    await api_only.run(second)
    claimed = await queue.settle(db, STAND_IN, [], 2, cases)
    assert [c.case.command if c.case else None for c in claimed] == [
        ["echo", "first"],
        ["echo", "second"],
    ]


async def test_output_with_nul_bytes_is_saved_and_the_run_ends(api: Api) -> None:
    """PostgreSQL text cannot hold NUL: the log keeps a replacement character instead."""
    test_id = await api.command_test(["printf", "a\\000b\\n"])
    execution_id = (await api.run(test_id))["id"]
    detail = await until(
        lambda: api.get(f"/executions/{execution_id}"), lambda d: d["status"] == "completed"
    )
    assert detail["result"] == "pass"
    response = await api.client.get(f"/api/v1/executions/{execution_id}/log", headers=api.admin)
    assert response.text == "a\N{REPLACEMENT CHARACTER}b\n"


async def test_nul_in_step_and_error_messages_is_stored_too(api_only: Api) -> None:
    """The same guard covers every text a run reports, not only its log."""
    db = api_only.state.db
    await api_only.run(await api_only.command_test(["true"]))
    (claimed,) = await queue.settle(db, STAND_IN, [], 1)
    step = StepRecord(1, "expect_text", "fail", description="read a\0b", error_message="saw a\0b")
    done = queue.Finished(
        claimed.id,
        claimed.attempt,
        Result.FAIL,
        None,
        "step 1: saw a\0b",
        (1, 0, 1, 0),
        Progress(claimed.id, log="a\0b", steps=[step]),
    )
    await queue.settle(db, STAND_IN, [done], 0)
    detail = await api_only.get(f"/executions/{claimed.id}")
    mark = "\N{REPLACEMENT CHARACTER}"
    assert (detail["status"], detail["error_message"]) == ("completed", f"step 1: saw a{mark}b")
    assert (detail["steps"][0]["description"], detail["steps"][0]["error_message"]) == (
        f"read a{mark}b",
        f"saw a{mark}b",
    )
