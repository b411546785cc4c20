"""Bad input on the dashboard: refused with a page that says what to fix, never a 500."""

from __future__ import annotations

from typing import Any

from conftest import Api, claim, finish
from testqueue.vocabulary import MAX_INT_ID, Result


async def test_ids_past_a_columns_range_are_refused_not_sent_to_the_database(
    api_only: Any,
) -> None:
    """The dashboard takes its id bounds from the vocabulary, as the API does."""
    async with api_only.dashboard() as browser:
        for path in (
            f"/tests/{MAX_INT_ID + 1}",
            "/tests/3000000000",
            f"/executions/1/artifacts/{MAX_INT_ID + 1}",
            "/executions/99999999999999999999",
        ):
            response = await browser.client.get(path)
            assert response.status_code == 422, f"{path}: {response.status_code}"
        response = await browser.client.get(f"/tests/{MAX_INT_ID}")
        assert response.status_code == 404
        assert "does not exist" in response.text


# Values that have broken parsers: other scripts' digits, huge and negative numbers,
# NUL, long text, JSON nested past any limit, and markup.
BAD = [
    "\N{SUPERSCRIPT TWO}",
    "\N{ARABIC-INDIC DIGIT ONE}",
    "-1",
    "0",
    "9" * 30,
    "",
    " ",
    "a\0b",
    "x" * 20_000,
    "[" * 5000 + "]" * 5000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    "1e309",
    "NaN",
    "<script>alert(1)</script>",
]
CASE_FIELDS = [
    "title",
    "description",
    "test_type",
    "priority",
    "steps",
    "expected_result",
    "preconditions",
    "test_data",
    "runner",
    "command",
    "timeout_seconds",
    "required_tags",
    "tags",
    "retries",
    "retry_on",
]
SUITE_FIELDS = ["name", "description", "test_case_ids", "tags", "tag_mode"]
FORMS: dict[str, list[str]] = {
    "/runs": ["test_case_id", "priority", "back"],
    "/executions/{execution}/cancel": ["back"],
    "/executions/{execution}/priority": ["priority", "back"],
    "/queue/clear": ["confirm"],
    "/queue/slots": ["slots"],
    "/tests/new": CASE_FIELDS,
    "/tests/{test_case}": CASE_FIELDS,
    "/tests/{test_case}/delete": ["confirm"],
    "/account/password": ["current_password", "new_password"],
    "/account/tokens": ["name", "expires_in_days"],
    "/account/tokens/{token}/revoke": [],
    "/account/sessions/{other_user}/end": ["back"],
    "/admin/users": ["username", "password", "role"],
    "/admin/users/{other_user}": ["role", "active"],
    "/admin/users/{other_user}/password": ["password"],
    "/suites": SUITE_FIELDS,
    "/suites/{suite}": SUITE_FIELDS,
    "/suites/{suite}/delete": ["confirm"],
}
# Forms whose plain post queues or cancels: checked after the row counts.
ACTIONS: dict[str, list[str]] = {
    "/suites/{suite}/run": ["priority"],
    "/batches/{batch}/rerun": ["only", "priority"],
    "/batches/{batch}/cancel": [],
}
QUERIES: dict[str, list[str]] = {
    "/signin": ["next"],
    "/tests": ["q", "page", "tag"],
    "/history": ["status", "result", "test_case", "user", "before", "after", "page"],
    "/admin": ["page"],
    "/events/executions/{execution}": ["chars", "cut"],
}
PATHS = [
    "/tests/{bad}",
    "/tests/{bad}/delete",
    "/executions/{bad}",
    "/executions/{bad}/log",
    "/executions/{execution}/artifacts/{bad}",
    "/events/executions/{bad}",
    "/suites/{bad}",
    "/batches/{bad}",
    "/events/batches/{bad}",
]
BAD_IDS = ["\N{SUPERSCRIPT TWO}", "-1", "0", "9" * 30, "1.5", "%00"]


async def _subject(api: Api) -> dict[str, str]:
    """Rows the forms act on: a test case, a finished run, another user, a token."""
    test_id = await api.command_test(["true"], title="bad input")
    execution = (await api.run(test_id))["id"]
    (claimed,) = await claim(api, 1)
    await finish(api, claimed, Result.PASS)
    await api.run(test_id)  # one pending, so clear and cancel have something to refuse
    await api.member("other")
    other = next(u["id"] for u in await api.get("/users") if u["username"] == "other")
    token = (
        await api.client.post("/api/v1/users/me/tokens", json={"name": "t"}, headers=api.admin)
    ).json()["id"]
    suite = (
        await api.client.post(
            "/api/v1/suites", json={"name": "bad", "test_case_ids": [test_id]}, headers=api.admin
        )
    ).json()
    batch = (
        await api.client.post("/api/v1/batches", json={"suite_id": suite["id"]}, headers=api.admin)
    ).json()
    return {
        "suite": str(suite["id"]),
        "batch": str(batch["batch"]["id"]),
        "test_case": str(test_id),
        "execution": str(execution),
        "other_user": str(other),
        "token": str(token),
    }


async def _rows(api: Api) -> tuple[int, ...]:
    tests = await api.get("/tests?limit=1")
    executions = await api.get("/executions?limit=1")
    users = await api.get("/users")
    suites = await api.get("/suites?limit=1")
    batches = await api.get("/batches?limit=1")
    return tests["total"], executions["total"], len(users), suites["total"], batches["total"]


async def _post_forms(
    browser: Any, forms: dict[str, list[str]], subject: dict[str, str]
) -> list[tuple[int, str]]:
    """Each form with each bad value in each field, and once empty: (status, what was sent)."""
    answers = []
    for path, fields in forms.items():
        target = path.format(**subject)
        for field in fields:
            for value in BAD:
                response = await browser.post(target, **{field: value})
                answers.append((response.status_code, f"POST {target} {field}={value[:20]!r}"))
        response = await browser.post(target)
        answers.append((response.status_code, f"POST {target} (empty)"))
    return answers


async def test_every_dashboard_form_and_query_refuses_bad_values_without_a_500(
    api_only: Api,
) -> None:
    subject = await _subject(api_only)
    before = await _rows(api_only)
    answers: list[tuple[int, str]] = []
    async with api_only.dashboard() as browser:
        answers += await _post_forms(browser, FORMS, subject)
        for path, params in QUERIES.items():
            target = path.format(**subject)
            for param in params:
                for value in BAD:
                    response = await browser.client.get(target, params={param: value})
                    answers.append((response.status_code, f"GET {target} {param}={value[:20]!r}"))
        for path in PATHS:
            for bad in BAD_IDS:
                target = path.format(bad=bad, **subject)
                response = await browser.client.get(target)
                answers.append((response.status_code, f"GET {target}"))
        for last_event_id in [b"\xb2.0", "1.\N{ARABIC-INDIC DIGIT ONE}".encode(), b"9" * 40, b"."]:
            response = await browser.client.get(
                f"/events/executions/{subject['execution']}",
                headers={b"Last-Event-ID": last_event_id},
            )
            answers.append((response.status_code, f"Last-Event-ID {last_event_id!r}"))
        assert await _rows(api_only) == before, "a refused form wrote a row"
        answers += await _post_forms(browser, ACTIONS, subject)
    failures = [where for code, where in answers if code >= 500]
    assert failures == [], failures[:10]
    assert len(answers) > 1000


async def test_a_deeply_nested_case_form_is_refused_next_to_its_field(api_only: Api) -> None:
    async with api_only.dashboard() as browser:
        for field in ("steps", "test_data"):
            response = await browser.post(
                "/tests/new", title="deep", runner="browser", **{field: "[" * 5000 + "]" * 5000}
            )
            assert response.status_code == 422
            assert "nested too deeply" in response.text
