"""Test cases over HTTP: create, read, change, delete, list; who may touch which."""

from __future__ import annotations

from typing import Any

from conftest import claim, finish
from testqueue.vocabulary import Result

TESTS = "/api/v1/tests"
BROWSER_STEPS = [{"action": "goto", "url": "https://example.com/login"}]
# Stands in for a worker so runs can be finished without a dispatcher or a wait.


async def create(api: Any, headers: dict[str, str], **body: Any) -> Any:
    response = await api.client.post(TESTS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def browser_test(api: Any, headers: dict[str, str], title: str = "a browser test") -> Any:
    return await create(api, headers, title=title, runner="browser", steps=BROWSER_STEPS)


async def total(api: Any, path: str = "/tests") -> int:
    return int((await api.get(f"{path}?limit=1"))["total"])


async def test_admin_creates_reads_changes_and_deletes_a_command_test(api_only: Any) -> None:
    api = api_only
    created = await create(
        api,
        api.admin,
        title="  smoke  ",
        command=["python", "-c", "print(1)"],
        priority="high",
        test_type="unit",
        timeout_seconds=30,
        required_tags=["linux", "Py3"],
        test_data={"base_url": "https://example.com"},
    )
    me = await api.get("/users/me")
    assert created["title"] == "smoke"
    assert created["runner"] == "command"
    assert created["command"] == ["python", "-c", "print(1)"]
    assert (created["priority"], created["test_type"]) == ("high", "unit")
    assert created["timeout_seconds"] == 30
    assert created["required_tags"] == ["linux", "py3"]
    assert created["created_by"] == me["id"]
    assert created["description"] == "" and created["steps"] == []
    test_id = created["id"]
    assert await api.get(f"/tests/{test_id}") == created

    response = await api.client.put(
        f"{TESTS}/{test_id}", json={"title": "smoke, renamed"}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["title"] == "smoke, renamed"
    unchanged = {k: v for k, v in created.items() if k not in ("title", "updated_at")}
    assert {k: changed[k] for k in unchanged} == unchanged
    assert changed["updated_at"] >= created["updated_at"]

    response = await api.client.delete(f"{TESTS}/{test_id}", headers=api.admin)
    assert response.status_code == 204, response.text
    # Archived: still readable (history links to it), never changed or run again.
    assert (await api.get(f"/tests/{test_id}"))["archived_at"] is not None
    for method in ("PUT", "DELETE"):
        response = await api.client.request(
            method, f"{TESTS}/{test_id}", json={"title": "x"}, headers=api.admin
        )
        assert response.status_code == 409, (method, response.text)
        assert response.json()["detail"] == f"test case {test_id} was deleted; it can only be read"
    refused = await api.client.post(f"/api/v1/executions/tests/{test_id}/run", headers=api.admin)
    assert refused.status_code == 404, refused.text
    assert refused.json()["detail"] == f"test case {test_id} does not exist or was deleted"
    assert await total(api) == 0
    missing = await api.client.get(f"{TESTS}/{test_id + 1}", headers=api.admin)
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"test case {test_id + 1} does not exist"


async def test_list_pages_newest_first_and_searches_titles(api_only: Any) -> None:
    api = api_only
    titles = ["Login works", "login fails", "checkout", "100% coverage", "profile_page"]
    ids = [(await api.command_test(["true"], title=title)) for title in titles]
    await browser_test(api, api.admin, "browser login")
    ids.append(ids[-1] + 1)
    newest_first = ids[::-1]

    first = await api.get("/tests?limit=2&offset=0")
    assert (first["total"], first["limit"], first["offset"]) == (6, 2, 0)
    assert [item["id"] for item in first["items"]] == newest_first[:2]
    middle = await api.get("/tests?limit=2&offset=2")
    assert [item["id"] for item in middle["items"]] == newest_first[2:4]
    last = await api.get("/tests?limit=4&offset=5")
    assert [item["id"] for item in last["items"]] == newest_first[5:]
    beyond = await api.get("/tests?offset=50")
    assert (beyond["total"], beyond["items"]) == (6, [])

    def found(page: Any) -> list[str]:
        return sorted(item["title"] for item in page["items"])

    login = await api.get("/tests?search=LOGIN")
    assert found(login) == ["Login works", "browser login", "login fails"]
    assert login["total"] == 3
    assert found(await api.get("/tests?search=%25")) == ["100% coverage"]
    assert found(await api.get("/tests?search=_")) == ["profile_page"]
    assert found(await api.get("/tests?search=login&runner=browser")) == ["browser login"]
    assert (await api.get("/tests?search=nothing-like-this"))["total"] == 0


async def test_members_create_browser_tests_but_not_command_tests(api_only: Any) -> None:
    api = api_only
    member = await api.member("mia")
    for body in (
        {"title": "shell", "runner": "command", "command": ["rm", "-rf", "/"]},
        {"title": "runner left out", "command": ["true"]},
    ):
        response = await api.client.post(TESTS, json=body, headers=member)
        assert response.status_code == 403, response.text
        assert "only an admin" in response.json()["detail"]
    assert await total(api) == 0
    created = await browser_test(api, member)
    me = await api.get("/users/me", headers=member)
    assert (created["runner"], created["created_by"], created["command"]) == (
        "browser",
        me["id"],
        None,
    )
    assert await total(api) == 1


async def test_members_change_and_delete_only_their_own_test_cases(api_only: Any) -> None:
    api = api_only
    owner = await api.member("olga")
    other = await api.member("omar")
    mine = await browser_test(api, owner, "olga's")
    admins_browser = await browser_test(api, api.admin, "admin's browser")
    admins_command = await api.command_test(["true"], title="admin's command")

    refused = [
        (other, mine["id"], "belongs to another user"),
        (owner, admins_browser["id"], "belongs to another user"),
        (owner, admins_command, "only an admin"),
    ]
    for headers, test_id, detail in refused:
        before = await api.get(f"/tests/{test_id}")
        put = await api.client.put(f"{TESTS}/{test_id}", json={"title": "taken"}, headers=headers)
        assert put.status_code == 403, put.text
        assert detail in put.json()["detail"]
        delete = await api.client.delete(f"{TESTS}/{test_id}", headers=headers)
        assert delete.status_code == 403, delete.text
        assert detail in delete.json()["detail"]
        assert await api.get(f"/tests/{test_id}") == before

    to_command = await api.client.put(
        f"{TESTS}/{mine['id']}", json={"runner": "command", "command": ["id"]}, headers=owner
    )
    assert to_command.status_code == 403, to_command.text
    assert "only an admin" in to_command.json()["detail"]
    assert await api.get(f"/tests/{mine['id']}") == mine

    own = await api.client.put(f"{TESTS}/{mine['id']}", json={"title": "olga's v2"}, headers=owner)
    assert own.status_code == 200, own.text
    assert own.json()["title"] == "olga's v2"
    by_admin = await api.client.put(
        f"{TESTS}/{mine['id']}", json={"description": "checked"}, headers=api.admin
    )
    assert by_admin.status_code == 200, by_admin.text
    assert (by_admin.json()["title"], by_admin.json()["description"]) == ("olga's v2", "checked")
    assert (await api.client.delete(f"{TESTS}/{mine['id']}", headers=owner)).status_code == 204
    removed = await api.client.delete(f"{TESTS}/{admins_browser['id']}", headers=api.admin)
    assert removed.status_code == 204
    assert await total(api) == 1


async def test_put_changes_only_the_fields_given_and_checks_the_result(api_only: Any) -> None:
    api = api_only
    test_id = await api.command_test(["echo", "hi"], title="partial", description="kept")
    before = await api.get(f"/tests/{test_id}")
    refused = [
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"command": []}, "command"),
        ({"command": ["", "x"]}, "command[0]"),
        ({"priority": "urgent"}, "priority"),
        ({"test_type": "smoke"}, "test_type"),
        ({"runner": "selenium"}, "runner 'selenium' is unknown"),
        ({"runner": "browser"}, "at least one step"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"owner": "someone"}, "owner"),
    ]
    for body, detail in refused:
        response = await api.client.put(f"{TESTS}/{test_id}", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert detail in str(response.json()["detail"]), (body, response.text)
        assert await api.get(f"/tests/{test_id}") == before, body

    response = await api.client.put(
        f"{TESTS}/{test_id}", json={"priority": "low", "timeout_seconds": 5}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    after = response.json()
    assert (after["priority"], after["timeout_seconds"]) == ("low", 5)
    assert (after["title"], after["description"], after["command"]) == (
        "partial",
        "kept",
        ["echo", "hi"],
    )


async def test_unknown_runner_and_bad_browser_steps_are_refused(api_only: Any) -> None:
    api = api_only
    cases = [
        ({"title": "t", "runner": "selenium"}, "runner 'selenium' is unknown: use one of"),
        ({"title": "t", "runner": "browser"}, "a browser test needs at least one step"),
        ({"title": "t", "runner": "browser", "steps": [{"action": "teleport"}]}, "step 1"),
        ({"title": "t", "runner": "command"}, "needs `command`"),
    ]
    for body, detail in cases:
        response = await api.client.post(TESTS, json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert detail in str(response.json()["detail"]), (body, response.text)
    assert await total(api) == 0


async def test_deleting_a_test_case_cancels_its_pending_runs_and_keeps_history(
    api_only: Any,
) -> None:
    api = api_only
    test_id = await api.command_test(["true"], title="doomed")
    other_id = await api.command_test(["true"], title="bystander")
    done, running, *pending = [(await api.run(test_id))["id"] for _ in range(4)]
    bystander = (await api.run(other_id))["id"]
    first, second = await claim(api, 2)
    assert (first.id, second.id) == (done, running)
    await finish(api, first, Result.PASS, exit_code=0)

    response = await api.client.delete(f"{TESTS}/{test_id}", headers=api.admin)
    assert response.status_code == 204, response.text

    history = await api.get("/executions?limit=10")
    assert history["total"] == 5
    by_id = {item["id"]: item for item in history["items"]}
    assert (by_id[done]["status"], by_id[done]["result"]) == ("completed", "pass")
    assert by_id[running]["status"] == "running"
    for execution_id in pending:
        assert by_id[execution_id]["status"] == "cancelled"
        assert by_id[execution_id]["error_message"] == "its test case was deleted"
    for execution_id in (done, running, *pending):
        # History keeps the archived test case's id and title.
        assert by_id[execution_id]["test_case_id"] == test_id
        assert by_id[execution_id]["test_case_title"] == "doomed"
    filtered = await api.get(f"/executions?test_case_id={test_id}")
    assert filtered["total"] == 4
    assert by_id[bystander]["status"] == "pending"
    assert by_id[bystander]["test_case_id"] == other_id
    status = await api.get("/executions/queue/status")
    assert [item["execution_id"] for item in status["queue"]] == [bystander]


async def test_a_base_url_in_test_data_must_be_a_web_address(api_only: Any) -> None:
    api = api_only
    member = await api.member("bea")
    mine = await browser_test(api, member, "relative steps")
    steps = [{"action": "goto", "url": "passwd"}]
    for base_url in ("file:///etc/", "javascript:alert(1)", " file:///etc/", 42):
        body = {
            "title": "t",
            "runner": "browser",
            "steps": steps,
            "test_data": {"base_url": base_url},
        }
        created = await api.client.post(TESTS, json=body, headers=member)
        assert created.status_code == 422, (base_url, created.text)
        assert "base_url` must start with http:// or https://" in str(created.json()["detail"])
        changed = await api.client.put(
            f"{TESTS}/{mine['id']}", json={"test_data": {"base_url": base_url}}, headers=member
        )
        assert changed.status_code == 422, (base_url, changed.text)
    assert await total(api) == 1
    assert await api.get(f"/tests/{mine['id']}") == mine
    ok = {
        "title": "t",
        "runner": "browser",
        "steps": steps,
        "test_data": {"base_url": "HTTPS://a.example"},
    }
    assert (await api.client.post(TESTS, json=ok, headers=member)).status_code == 201
