"""Browser test cases through the whole queue: steps stored, artifacts listed and served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser_pages import Pages, serve_pages

from conftest import Api
from waiting import until

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    async with serve_pages() as site:
        yield site


SIGN_IN: list[dict[str, Any]] = [
    {"action": "goto", "url": "/login", "description": "open the sign-in page"},
    {"action": "fill", "selector": "#username", "value": "alice"},
    {"action": "fill", "selector": "#password", "value": "secret"},
    {"action": "click", "selector": "#submit"},
    {"action": "expect_text", "selector": "#greeting", "contains": "Welcome, alice"},
]


async def _browser_test(
    api: Api, steps: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> int:
    response = await api.client.post(
        "/api/v1/tests",
        json={"title": "sign in", "runner": "browser", "steps": steps},
        headers=headers or api.admin,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _finished(api: Api, execution_id: int) -> Any:
    return await until(
        lambda: api.get(f"/executions/{execution_id}"),
        lambda d: d["status"] in ("completed", "cancelled"),
        timeout=60,
    )


async def test_a_member_runs_a_passing_browser_test(api: Api, pages: Pages) -> None:
    member = await api.member("tess")
    test_id = await _browser_test(api, SIGN_IN, headers=member)
    run = await api.run(test_id, member, base_url=pages.base_url, browser="chromium")
    detail = await _finished(api, run["id"])
    assert detail["result"] == "pass", detail
    assert (detail["total_steps"], detail["passed_steps"], detail["failed_steps"]) == (5, 5, 0)
    assert [s["result"] for s in detail["steps"]] == ["pass"] * 5
    assert detail["steps"][0]["description"] == "open the sign-in page"
    assert detail["artifacts"] == [], "a passing run without screenshot steps keeps nothing"
    log = (await api.client.get(f"/api/v1/executions/{run['id']}/log", headers=member)).text
    assert "console log: login page ready" in log


async def test_a_failing_step_is_recorded_and_its_screenshot_served(api: Api, pages: Pages) -> None:
    steps = [*SIGN_IN[:2], {**SIGN_IN[2], "value": "wrong"}, *SIGN_IN[3:]]
    steps[4] = {**steps[4], "timeout_ms": 500}
    steps.append({"action": "screenshot", "name": "after"})
    test_id = await _browser_test(api, steps)
    run = await api.run(test_id, base_url=pages.base_url)
    detail = await _finished(api, run["id"])
    assert detail["result"] == "fail"
    assert [s["result"] for s in detail["steps"]] == [
        "pass",
        "pass",
        "pass",
        "pass",
        "fail",
        "skip",
    ]
    assert (detail["failed_steps"], detail["skipped_steps"]) == (1, 1)
    assert "step 5" in detail["error_message"]
    kinds = sorted(a["kind"] for a in detail["artifacts"])
    assert kinds == ["screenshot", "trace"]
    shot = next(a for a in detail["artifacts"] if a["kind"] == "screenshot")
    response = await api.client.get(shot["url"], headers=api.admin)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)
    assert (await api.client.get(shot["url"])).status_code == 401

    deleted = await api.client.delete(f"/api/v1/executions/{run['id']}", headers=api.admin)
    assert deleted.status_code == 204
    assert (await api.client.get(shot["url"], headers=api.admin)).status_code == 404


async def test_bad_steps_are_refused_naming_the_step(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/tests",
        json={
            "title": "bad",
            "runner": "browser",
            "steps": [{"action": "goto", "url": "/x"}, {"action": "click"}],
        },
        headers=api.admin,
    )
    assert response.status_code == 422
    assert "step 2" in str(response.json()["detail"])
    assert "selector" in str(response.json()["detail"])
    assert (await api.get("/tests"))["total"] == 0


async def test_an_unknown_browser_is_an_error_that_says_what_there_is(
    api: Api, pages: Pages
) -> None:
    test_id = await _browser_test(api, SIGN_IN)
    run = await api.run(test_id, base_url=pages.base_url, browser="firefox")
    detail = await _finished(api, run["id"])
    assert detail["result"] == "error"
    assert "chromium" in detail["error_message"]
