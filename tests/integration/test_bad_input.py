"""Bad input: every refusal is a 4xx that says what to fix, and nothing is half-written.

Each table row is one request; after each, the test cases and executions are
counted again so a refused write that still left a row shows up at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

V1 = "/api/v1"
BIG = 10**30
NOT_JSON = "the body is not valid JSON: "


def detail_text(response: Any) -> str:
    """The detail as one string, whether a message or a list of problems."""
    detail = response.json()["detail"]
    if isinstance(detail, list):
        return " | ".join(problem["msg"] for problem in detail)
    return str(detail)


async def counts(api: Any) -> tuple[int, int]:
    tests = await api.get("/tests?limit=1")
    executions = await api.get("/executions?limit=1")
    return tests["total"], executions["total"]


async def check_refusals(api: Any, cases: list[tuple[Any, ...]]) -> None:
    """Send each (method, path, request kwargs, status, words the detail must hold)."""
    before = await counts(api)
    for method, path, kwargs, code, words in cases:
        kwargs = {**kwargs, "headers": {**api.admin, **kwargs.get("headers", {})}}
        response = await api.client.request(method, f"{V1}{path}", **kwargs)
        where = f"{method} {path} {str(kwargs)[:200]}"
        assert response.status_code == code, f"{where}: {response.status_code} {response.text}"
        assert response.headers["content-type"] == "application/json", where
        assert words in detail_text(response), f"{where}: {response.text[:500]}"
        assert len(response.content) < 4096, f"{where}: the detail echoes the input"
        assert await counts(api) == before, f"{where} wrote a row"


@pytest.fixture
async def api(api_only: Any) -> AsyncIterator[Any]:
    """The app without a dispatcher, with one test case and one pending run in it."""
    test_id = await api_only.command_test(["true"], title="existing")
    await api_only.run(test_id)
    api_only.test_id = test_id
    yield api_only


def deeply_nested(field: str, depth: int) -> dict[str, Any]:
    """A request whose `field` nests lists `depth` deep (too deep for httpx to encode)."""
    nested = b"[" * depth + b"1" + b"]" * depth
    value = b'{"d": ' + nested + b"}" if field == "test_data" else b"[" + nested + b"]"
    body = b'{"title": "deep", "command": ["t"], "%s": %s}' % (field.encode(), value)
    return {"content": body, "headers": {"content-type": "application/json"}}


async def test_malformed_or_mistyped_json_bodies(api: Any) -> None:
    run = f"/executions/tests/{api.test_id}/run"
    json_header = {**api.admin, "content-type": "application/json"}
    cases = []
    for path in ("/tests", run, "/executions/bulk", f"/tests/{api.test_id}"):
        method = "PUT" if path.startswith("/tests/") else "POST"
        cases += [
            (method, path, {"content": b'{"title": "x",', "headers": json_header}, 422, NOT_JSON),
            (method, path, {"content": b"\xff\xfe", "headers": json_header}, 422, NOT_JSON),
            (method, path, {"json": ["title", "x"]}, 422, "valid dictionary"),
            (method, path, {"json": "title"}, 422, "valid dictionary"),
        ]
    cases += [
        ("POST", "/tests", {"content": b'{"title": "x"}'}, 422, "valid dictionary"),
        ("POST", "/tests", {"json": {"title": "x", "command": ["true"], "owner": 1}}, 422, "owner"),
        ("POST", run, {"json": {"priorty": 1}}, 422, "priorty: Extra inputs are not permitted"),
        ("POST", "/executions/bulk", {"json": {"test_case_ids": "1"}}, 422, "test_case_ids"),
        ("POST", "/tests", {"json": {"title": ["x"], "command": ["true"]}}, 422, "title"),
        ("POST", "/tests", {"json": {"title": "x", "command": "true"}}, 422, "command"),
        ("POST", "/tests", {"json": {"title": "x", "command": [1]}}, 422, "command.0"),
        (
            "POST",
            "/tests",
            {"json": {"title": "x", "command": ["t"], "test_data": []}},
            422,
            "test_data",
        ),
    ]
    await check_refusals(api, cases)


async def test_priorities_outside_one_to_ten_or_the_three_words(api: Any) -> None:
    run = f"/executions/tests/{api.test_id}/run"
    execution_id = (await api.get("/executions"))["items"][0]["id"]
    cases = []
    for value, words in [
        ("urgent", "priority must be 1..10 (1 = highest) or one of high, medium, low"),
        ("", "priority must be 1..10"),
        ("3", "priority must be 1..10"),
        (0, "priority: priority 0 is out of range: it must be 1..10"),
        (11, "priority: priority 11 is out of range: it must be 1..10"),
        (-1, "out of range"),
        (BIG, "out of range"),
        (True, "priority must be a number 1..10"),
        (3.5, "priority: priority must be a number 1..10"),
        ([1], "priority"),
        ({"level": 1}, "priority"),
    ]:
        cases += [
            ("POST", run, {"json": {"priority": value}}, 422, words),
            (
                "POST",
                "/executions/bulk",
                {"json": {"test_case_ids": [api.test_id], "priority": value}},
                422,
                words,
            ),
            ("PATCH", f"/executions/{execution_id}", {"json": {"priority": value}}, 422, words),
        ]
    cases += [
        ("PATCH", f"/executions/{execution_id}", {"json": {}}, 422, "priority: Field required"),
        (
            "POST",
            "/tests",
            {"json": {"title": "x", "command": ["t"], "priority": 1}},
            422,
            "priority",
        ),
        (
            "POST",
            "/tests",
            {"json": {"title": "x", "command": ["t"], "priority": "urgent"}},
            422,
            "priority",
        ),
    ]
    await check_refusals(api, cases)
    assert (await api.get(f"/executions/{execution_id}"))["priority"] == 5


async def test_test_case_fields_out_of_bounds(api: Any) -> None:
    def body(**fields: Any) -> dict[str, Any]:
        return {"json": {"title": "bounded", "command": ["echo"], **fields}}

    cases = [
        ("POST", "/tests", body(command=[]), 422, "needs `command`: a non-empty argv list"),
        ("POST", "/tests", body(command=None), 422, "needs `command`"),
        ("POST", "/tests", body(command=[""]), 422, "`command[0]` (the program) may not be empty"),
        ("POST", "/tests", body(command=["x"] * 300), 422, "command: List should have at most 256"),
        ("POST", "/tests", body(command=["echo", "a" * 10_000]), 422, "at most 4096 characters"),
        ("POST", "/tests", body(command=["echo", "a\0b"]), 422, "may not contain a NUL character"),
        ("POST", "/tests", body(title="t" * 10_000), 422, "title: String should have at most 200"),
        ("POST", "/tests", body(title="   "), 422, "title: String should have at least 1"),
        ("POST", "/tests", body(title="nul\0title"), 422, "NUL"),
        ("POST", "/tests", body(description="nul\0here"), 422, "NUL"),
        ("POST", "/tests", body(description="d" * 20_001), 422, "description"),
        (
            "POST",
            "/tests",
            body(timeout_seconds=10**12),
            422,
            "timeout_seconds: Input should be less",
        ),
        (
            "POST",
            "/tests",
            body(timeout_seconds=0),
            422,
            "timeout_seconds: Input should be greater",
        ),
        ("POST", "/tests", body(timeout_seconds="soon"), 422, "timeout_seconds"),
        ("POST", "/tests", body(timeout_seconds=True), 422, "timeout_seconds"),
        ("POST", "/tests", body(timeout_seconds="30"), 422, "timeout_seconds"),
        (
            "POST",
            "/tests",
            body(required_tags=["linux; rm -rf /"]),
            422,
            "required_tags.0: String should match",
        ),
        ("POST", "/tests", body(required_tags=[""]), 422, "required_tags.0"),
        ("POST", "/tests", body(required_tags=["t"] * 21), 422, "required_tags"),
        ("POST", "/tests", body(required_tags="linux"), 422, "required_tags"),
        ("POST", "/tests", body(test_type="smoke"), 422, "test_type"),
        ("POST", "/tests", body(runner="x" * 17), 422, "runner"),
        ("POST", "/tests", body(steps=[{}] * 501), 422, "steps"),
        ("POST", "/tests", {"json": {"command": ["echo"]}}, 422, "title: Field required"),
        ("PUT", f"/tests/{api.test_id}", {"json": {"command": []}}, 422, "command"),
        ("PUT", f"/tests/{api.test_id}", {"json": {"title": "t" * 10_000}}, 422, "title"),
        ("PUT", f"/tests/{api.test_id}", {"json": {"title": "a\0"}}, 422, "NUL"),
        (
            "PUT",
            f"/tests/{api.test_id}",
            {"json": {"timeout_seconds": 1e300}},
            422,
            "timeout_seconds",
        ),
        (
            "PUT",
            f"/tests/{api.test_id}",
            {"json": {"required_tags": ["a b"]}},
            422,
            "required_tags",
        ),
    ]
    before = await api.get(f"/tests/{api.test_id}")
    await check_refusals(api, cases)
    assert await api.get(f"/tests/{api.test_id}") == before


async def test_values_json_allows_but_the_database_cannot_store(api: Any) -> None:
    json_header = {**api.admin, "content-type": "application/json"}
    run = f"/executions/tests/{api.test_id}/run"
    cases = [
        (
            "POST",
            "/tests",
            {
                "content": b'{"title": "n", "command": ["t"], "test_data": {"x": NaN}}',
                "headers": json_header,
            },
            422,
            "test_data",
        ),
        (
            "POST",
            "/tests",
            {
                "content": b'{"title": "n", "command": ["t"], "steps": [Infinity]}',
                "headers": json_header,
            },
            422,
            "steps",
        ),
        (
            "POST",
            "/tests",
            {
                "content": b'{"title": "n", "command": ["t"], "timeout_seconds": NaN}',
                "headers": json_header,
            },
            422,
            "timeout_seconds",
        ),
        ("POST", run, {"json": {"environment": "a\0b"}}, 422, "NUL"),
        ("POST", run, {"json": {"triggered_by": "a\0b"}}, 422, "NUL"),
        ("POST", run, {"json": {"browser": "a\0b"}}, 422, "NUL"),
        ("POST", run, {"json": {"base_url": "https://a\0b"}}, 422, "NUL"),
        ("POST", run, {"json": {"base_url": "ftp://example.com"}}, 422, "base_url"),
        (
            "POST",
            "/tests",
            {
                "json": {
                    "title": "t",
                    "command": ["t"],
                    "test_data": {"base_url": "https://example.com/" + "p" * 2000},
                }
            },
            422,
            "`base_url` may have at most 2000 characters",
        ),
        ("POST", run, {"json": {"environment": "e" * 101}}, 422, "environment"),
        (
            "POST",
            run,
            {"json": {"browser": "b" * 33}},
            422,
            "browser: String should have at most 32",
        ),
        (
            "POST",
            "/tests",
            {
                "json": {
                    "title": "t",
                    "command": ["t"],
                    "required_tags": [f"{i:02}" + "t" * 38 for i in range(20)],
                }
            },
            422,
            "required_tags: the tags take 821 characters together; at most 500",
        ),
        ("POST", "/executions/bulk", {"json": {"test_case_ids": [True]}}, 422, "test_case_ids.0"),
        (
            "POST",
            "/executions/bulk",
            {"json": {"test_case_ids": [str(api.test_id)]}},
            422,
            "test_case_ids.0",
        ),
        (
            "POST",
            "/tests",
            deeply_nested("test_data", 300),
            422,
            "test_data: is nested more than 100",
        ),
        ("POST", "/tests", deeply_nested("steps", 101), 422, "steps: is nested more than 100"),
        ("POST", "/tests", deeply_nested("test_data", 100_000), 400, "error parsing the body"),
        ("GET", "/tests?search=a%00b", {}, 422, "NUL"),
        ("GET", "/tests?runner=a%00b", {}, 422, "NUL"),
    ]
    await check_refusals(api, cases)


async def test_ids_and_query_parameters(api: Any) -> None:
    execution_id = (await api.get("/executions"))["items"][0]["id"]
    cases = [
        ("GET", "/tests/424242", {}, 404, "test case 424242 does not exist"),
        ("GET", "/executions/424242", {}, 404, "execution 424242 does not exist"),
        ("POST", "/executions/tests/424242/run", {}, 404, "test case 424242 does not exist"),
        ("PATCH", "/executions/424242", {"json": {"priority": 1}}, 404, "execution 424242"),
        ("GET", "/tests/abc", {}, 422, "test_case_id: Input should be a valid integer"),
        ("GET", "/tests/1.5", {}, 422, "test_case_id: Input should be a valid integer"),
        ("GET", "/executions/abc", {}, 422, "execution_id: Input should be a valid integer"),
        ("POST", "/executions/abc/cancel", {}, 422, "execution_id"),
        ("GET", "/executions/abc/log", {}, 422, "execution_id"),
        ("POST", "/executions/tests/abc/run", {}, 422, "test_case_id"),
        ("DELETE", "/tests/abc", {}, 422, "test_case_id"),
        (
            "GET",
            "/executions?limit=-1",
            {},
            422,
            "limit: Input should be greater than or equal to 1",
        ),
        ("GET", "/executions?limit=0", {}, 422, "limit"),
        (
            "GET",
            "/executions?limit=100000",
            {},
            422,
            "limit: Input should be less than or equal to 500",
        ),
        (
            "GET",
            "/executions?offset=-1",
            {},
            422,
            "offset: Input should be greater than or equal to 0",
        ),
        ("GET", "/executions?limit=ten", {}, 422, "limit: Input should be a valid integer"),
        ("GET", "/tests?limit=-5", {}, 422, "limit"),
        ("GET", "/tests?offset=-5", {}, 422, "offset"),
        ("GET", "/executions/queue/status?limit=-1", {}, 422, "limit"),
        ("GET", "/executions/queue/status?offset=-1", {}, 422, "offset"),
        ("GET", "/executions?status=done", {}, 422, "status: Input should be 'pending', 'running'"),
        ("GET", "/executions?result=passed", {}, 422, "result: Input should be 'pass'"),
        ("GET", "/executions?test_case_id=x", {}, 422, "test_case_id"),
        ("GET", "/tests?search=" + "s" * 201, {}, 422, "search"),
        ("GET", "/tests?search=a&search=b", {}, 422, "search: give it once, not 2 times"),
        ("GET", "/executions?limit=5&limit=6&limit=7", {}, 422, "limit: give it once, not 3"),
        ("GET", "/tests?tag=a%20b", {}, 422, "tag.0: String should match pattern"),
        (
            "PUT",
            f"/tests/{api.test_id}",
            {"json": {"description": None}},
            422,
            "description: Input should be a valid string",
        ),
        ("PUT", f"/tests/{api.test_id}", {"json": {"retries": 6}}, 422, "retries: Input should"),
        (
            "PUT",
            f"/tests/{api.test_id}",
            {"json": {"command": ["", "x"]}},
            422,
            "`command[0]` (the program) may not be empty",
        ),
        ("POST", "/tests", {"json": {"title": "a\u0000", "command": ["t"]}}, 422, "NUL"),
    ]
    await check_refusals(api, cases)
    tags = await api.client.get(f"{V1}/tests?tag=a&tag=b", headers=api.admin)
    assert tags.status_code == 200, "a list parameter is given once per value"
    assert (await api.get(f"/executions/{execution_id}"))["status"] == "pending"


async def test_numbers_too_big_for_any_row(api: Any) -> None:
    cases = [
        ("GET", f"/tests/{BIG}", {}, 422, "test_case_id"),
        ("PUT", f"/tests/{BIG}", {"json": {"title": "x"}}, 422, "test_case_id"),
        ("DELETE", f"/tests/{BIG}", {}, 422, "test_case_id"),
        ("GET", f"/executions/{BIG}", {}, 422, "execution_id"),
        ("GET", f"/executions/{BIG}/log", {}, 422, "execution_id"),
        ("POST", f"/executions/{BIG}/cancel", {}, 422, "execution_id"),
        ("PATCH", f"/executions/{BIG}", {"json": {"priority": 1}}, 422, "execution_id"),
        ("POST", f"/executions/tests/{BIG}/run", {}, 422, "test_case_id"),
        (
            "POST",
            "/executions/bulk",
            {"json": {"test_case_ids": [api.test_id, BIG]}},
            422,
            "test_case_ids",
        ),
        ("GET", f"/executions?test_case_id={BIG}", {}, 422, "test_case_id"),
        ("GET", f"/executions?user_id={BIG}", {}, 422, "user_id"),
        ("GET", f"/executions?offset={BIG}", {}, 422, "offset"),
        ("GET", f"/tests?offset={BIG}", {}, 422, "offset"),
        ("GET", f"/executions/queue/status?offset={BIG}", {}, 422, "offset"),
        (
            "PUT",
            "/executions/queue/settings",
            {"json": {"max_concurrent": BIG}},
            422,
            "max_concurrent",
        ),
        (
            "PUT",
            "/executions/queue/settings",
            {"json": {"max_concurrent": True}},
            422,
            "max_concurrent",
        ),
        (
            "PUT",
            "/executions/queue/settings",
            {"json": {"max_concurrent": "3"}},
            422,
            "max_concurrent",
        ),
        (
            "PUT",
            "/executions/queue/settings",
            {"json": {"max_concurrent": 2.5}},
            422,
            "max_concurrent",
        ),
        ("PUT", "/executions/queue/settings", {"json": {"slots": 3}}, 422, "slots"),
    ]
    await check_refusals(api, cases)
    assert (await api.get("/executions/queue/settings"))["max_concurrent"] == 5


async def test_bodies_over_the_limit_are_refused_with_413(api: Any) -> None:
    limit = api.state.settings.max_body_bytes
    big_title = {"title": "x", "command": ["echo"], "description": "d" * (limit + 1)}
    too_many = {"test_case_ids": [api.test_id] * (limit // 2)}

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "streamed", "command": ["echo"], "description": "'
        for _ in range(limit // 65_536 + 1):
            yield b"d" * 65_536
        yield b'"}'

    json_header = {**api.admin, "content-type": "application/json"}
    lying = {**json_header, "content-length": "20"}
    words = f"the request body is over {limit} bytes"
    cases = [
        ("POST", "/tests", {"json": big_title}, 413, words),
        ("POST", "/executions/bulk", {"json": too_many}, 413, words),
        ("POST", "/tests", {"content": chunks(), "headers": json_header}, 413, words),
        ("POST", "/tests", {"content": b"x" * (limit + 10), "headers": lying}, 413, words),
        (
            "POST",
            "/tests",
            {"content": b"{}", "headers": {**json_header, "content-length": "ten"}},
            400,
            "Content-Length",
        ),
        (
            "POST",
            "/auth/login",
            {
                "content": b"username=admin&password=" + b"p" * limit,
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            413,
            words,
        ),
    ]
    await check_refusals(api, cases)
    fits = {"title": "fits", "command": ["echo"], "description": "d" * 19_000}
    response = await api.client.post(f"{V1}/tests", json=fits, headers=api.admin)
    assert response.status_code == 201, response.text


async def test_odd_but_valid_json_is_stored_and_read_back_as_sent(api: Any) -> None:
    deep: Any = "bottom"
    for _ in range(90):
        deep = [deep]
    test_data = {"nul": "a\0b", "deep": deep, "unicode": "\u2603", "big": 10**30}
    response = await api.client.post(
        f"{V1}/tests",
        json={"title": "odd", "command": ["t"], "test_data": test_data},
        headers=api.admin,
    )
    assert response.status_code == 201, response.text
    assert (await api.get(f"/tests/{response.json()['id']}"))["test_data"] == test_data
