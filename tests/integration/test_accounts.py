"""Accounts: sessions that end when they should, personal tokens, throttled sign-in,
account management with at least one admin left, and the audit trail."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from conftest import ADMIN_PASSWORD, Api
from testqueue.models import AccessToken, LoginFailure, Session, utcnow
from testqueue.services import throttle

LOGIN = "/api/v1/auth/login"
V1 = "/api/v1"


async def _login(api: Api, username: str, password: str) -> dict[str, str]:
    return await api.login(username, password)


async def _me(api: Api, headers: dict[str, str]) -> Any:
    return await api.client.get(f"{V1}/users/me", headers=headers)


async def _member(api: Api, name: str) -> tuple[int, str]:
    password = f"{name}-password"
    created = await api.client.post(
        f"{V1}/users", json={"username": name, "password": password}, headers=api.admin
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"]), password


def _says(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["detail"], response.text


async def test_signing_out_ends_that_session_on_the_api_and_the_dashboard(api_only: Api) -> None:
    other = await _login(api_only, "admin", ADMIN_PASSWORD)
    async with api_only.dashboard() as browser:
        token = browser.client.cookies["testqueue_session"]
        as_cookie = {"Authorization": f"Bearer {token}"}
        assert (await _me(api_only, as_cookie)).status_code == 200
        signed_out = await browser.post("/signout")
        assert signed_out.status_code == 303
        # The same token is dead as a bearer token too, not only dropped from the browser.
        _says(await _me(api_only, as_cookie), 401, "this session has ended")
    out = await api_only.client.post(f"{V1}/auth/logout", headers=api_only.admin)
    assert out.status_code == 204, out.text
    _says(await _me(api_only, api_only.admin), 401, "this session has ended")
    assert (await _me(api_only, other)).status_code == 200, "other sessions go on"


async def test_a_password_change_ends_every_session_of_the_account(api_only: Api) -> None:
    _, password = await _member(api_only, "pia")
    first, second = await _login(api_only, "pia", password), await _login(api_only, "pia", password)
    wrong = await api_only.client.post(
        f"{V1}/users/me/password",
        json={"current_password": "not-it", "new_password": "pia-new-password"},
        headers=first,
    )
    _says(wrong, 403, "the current password is not right")
    changed = await api_only.client.post(
        f"{V1}/users/me/password",
        json={"current_password": password, "new_password": "pia-new-password"},
        headers=first,
    )
    assert changed.status_code == 204, changed.text
    for headers in (first, second):
        _says(await _me(api_only, headers), 401, "this session has ended")
    refused = await api_only.client.post(LOGIN, data={"username": "pia", "password": password})
    assert refused.status_code == 401
    assert (await _me(api_only, await _login(api_only, "pia", "pia-new-password"))).is_success


async def test_an_admin_resets_a_password_and_signs_an_account_out_everywhere(
    api_only: Api,
) -> None:
    quinn, password = await _member(api_only, "quinn")
    session = await _login(api_only, "quinn", password)
    reset = await api_only.client.put(
        f"{V1}/users/{quinn}/password", json={"password": "reset-by-admin"}, headers=api_only.admin
    )
    assert reset.status_code == 204, reset.text
    _says(await _me(api_only, session), 401, "this session has ended")

    session = await _login(api_only, "quinn", "reset-by-admin")
    rita, _ = await _member(api_only, "rita")
    refused = await api_only.client.delete(f"{V1}/users/{rita}/sessions", headers=session)
    _says(refused, 403, "only an admin")
    mine = await api_only.client.delete(f"{V1}/users/{quinn}/sessions", headers=session)
    assert mine.status_code == 204, mine.text
    _says(await _me(api_only, session), 401, "this session has ended")


async def test_disabling_ends_sessions_and_stops_tokens_and_enabling_brings_tokens_back(
    api_only: Api,
) -> None:
    sam, password = await _member(api_only, "sam")
    session = await _login(api_only, "sam", password)
    token = (await _new_token(api_only, session, "ci"))["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await _me(api_only, bearer)).status_code == 200

    disabled = await api_only.client.patch(
        f"{V1}/users/{sam}", json={"is_active": False}, headers=api_only.admin
    )
    assert disabled.json()["is_active"] is False
    _says(await _me(api_only, session), 401, "this session has ended")
    _says(await _me(api_only, bearer), 401, "this account is disabled")
    refused = await api_only.client.post(LOGIN, data={"username": "sam", "password": password})
    assert refused.status_code == 401

    await api_only.client.patch(
        f"{V1}/users/{sam}", json={"is_active": True}, headers=api_only.admin
    )
    assert (await _me(api_only, bearer)).status_code == 200


async def test_the_last_active_admin_can_be_neither_demoted_nor_disabled(api_only: Api) -> None:
    admin_id = (await api_only.get("/users/me"))["id"]
    for change in ({"role": "member"}, {"is_active": False}):
        refused = await api_only.client.patch(
            f"{V1}/users/{admin_id}", json=change, headers=api_only.admin
        )
        _says(refused, 409, "the last active admin")
    tina, password = await _member(api_only, "tina")
    promoted = await api_only.client.patch(
        f"{V1}/users/{tina}", json={"role": "admin"}, headers=api_only.admin
    )
    assert promoted.json()["role"] == "admin"
    tina_admin = await _login(api_only, "tina", password)
    # Two admins demoting each other at once: one wins, one admin is always left.
    answers = await asyncio.gather(
        api_only.client.patch(
            f"{V1}/users/{tina}", json={"role": "member"}, headers=api_only.admin
        ),
        api_only.client.patch(
            f"{V1}/users/{admin_id}", json={"role": "member"}, headers=tina_admin
        ),
    )
    assert sorted(a.status_code for a in answers) in ([200, 403], [200, 409])
    users = await api_only.state.accounts.list_users()
    assert len([u for u in users if u.role == "admin" and u.is_active]) == 1


async def test_a_role_change_takes_effect_at_the_next_request(api_only: Api) -> None:
    uma, password = await _member(api_only, "uma")
    session = await _login(api_only, "uma", password)
    assert (await api_only.client.get(f"{V1}/users", headers=session)).status_code == 403
    await api_only.client.patch(f"{V1}/users/{uma}", json={"role": "admin"}, headers=api_only.admin)
    assert (await api_only.client.get(f"{V1}/users", headers=session)).status_code == 200


async def _new_token(api: Api, headers: dict[str, str], name: str, **body: Any) -> Any:
    created = await api.client.post(
        f"{V1}/users/me/tokens", json={"name": name, **body}, headers=headers
    )
    assert created.status_code == 201, created.text
    return created.json()


async def test_personal_tokens_are_shown_once_kept_hashed_and_revocable(api_only: Api) -> None:
    created = await _new_token(api_only, api_only.admin, "nightly", expires_in_days=30)
    token = created["token"]
    assert token.startswith("tq_") and created["prefix"] == token[:10]
    listed = await api_only.get("/users/me/tokens")
    assert [t["name"] for t in listed] == ["nightly"]
    assert "token" not in listed[0] and listed[0]["last_used_at"] is None
    async with api_only.state.db.read() as conn:
        stored = (await conn.execute(select(AccessToken.__table__))).mappings().one()
    assert token not in {str(v) for v in stored.values()}, "only the hash is kept"

    bearer = {"Authorization": f"Bearer {token}"}
    assert (await _me(api_only, bearer)).json()["username"] == "admin"
    assert (await api_only.get("/users/me/tokens"))[0]["last_used_at"] is not None
    _says(
        await api_only.client.post(f"{V1}/auth/logout", headers=bearer),
        409,
        "personal access token",
    )

    member = await api_only.member("vic")
    refused = await api_only.client.delete(f"{V1}/users/me/tokens/{created['id']}", headers=member)
    _says(refused, 404, f"you have no access token {created['id']}")
    revoked = await api_only.client.delete(
        f"{V1}/users/me/tokens/{created['id']}", headers=api_only.admin
    )
    assert revoked.status_code == 204
    _says(await _me(api_only, bearer), 401, "not valid or was revoked")


async def test_an_expired_token_stops_working(api_only: Api) -> None:
    created = await _new_token(api_only, api_only.admin, "short", expires_in_days=1)
    async with api_only.state.db.write() as conn:
        await conn.execute(update(AccessToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    bearer = {"Authorization": f"Bearer {created['token']}"}
    _says(await _me(api_only, bearer), 401, "has expired")


async def _fail(api: Api, username: str) -> Any:
    return await api.client.post(LOGIN, data={"username": username, "password": "wrong-one"})


async def _lockout_passes(api: Api) -> None:
    """As if the lockout's time went by: in the database, and in what the process saw."""
    async with api.state.db.write() as conn:
        await conn.execute(
            update(LoginFailure).values(blocked_until=utcnow() - timedelta(seconds=1))
        )
    api.state.accounts.lockouts = throttle.Lockouts()


async def test_failed_sign_ins_are_throttled_per_username_with_growing_waits(
    api_only: Api,
) -> None:
    _, password = await _member(api_only, "wes")
    for _ in range(5):
        assert (await _fail(api_only, "wes")).status_code == 401
    refused = await api_only.client.post(LOGIN, data={"username": "wes", "password": password})
    _says(refused, 429, "too many failed sign-ins")
    first_wait = int(refused.headers["retry-after"])
    assert 50 <= first_wait <= 60

    await _lockout_passes(api_only)
    assert (await _fail(api_only, "wes")).status_code == 401
    again = await _fail(api_only, "wes")
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > first_wait, "each further failure waits longer"

    await _lockout_passes(api_only)
    assert await _login(api_only, "wes", password)
    for _ in range(4):  # a success forgot the username's failures
        assert (await _fail(api_only, "wes")).status_code == 401


async def test_a_lockout_from_another_host_holds_and_one_seen_is_refused_unread(
    api_only: Api,
) -> None:
    until = utcnow() + timedelta(minutes=5)
    async with api_only.state.db.write() as conn:  # another API host locked "vic" out
        await conn.execute(
            insert(LoginFailure).values(
                key="user:vic", failures=9, first_at=utcnow(), blocked_until=until
            )
        )
    _says(await _fail(api_only, "vic"), 429, "too many failed sign-ins")
    async with api_only.state.db.write() as conn:  # gone from the database ...
        await conn.execute(delete(LoginFailure))
    # ... the process still knows: nothing ends a lockout early, so it needs no read.
    _says(await _fail(api_only, "vic"), 429, "too many failed sign-ins")
    assert (await _fail(api_only, "other")).status_code == 401


async def test_failed_sign_ins_are_throttled_per_client_address(api_only: Api) -> None:
    for n in range(20):
        assert (await _fail(api_only, f"nobody-{n}")).status_code == 401
    refused = await api_only.client.post(
        LOGIN, data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    _says(refused, 429, "too many failed sign-ins")
    page = await api_only.dashboard_sign_in("admin", ADMIN_PASSWORD)
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    assert page.headers["retry-after"].isdigit()


async def test_sessions_are_kept_as_rows_that_end(api_only: Api) -> None:
    async with api_only.state.db.read() as conn:
        sessions = (await conn.execute(select(Session.id))).all()
    assert len(sessions) == 1  # the admin's sign-in of the fixture
    await api_only.client.post(f"{V1}/auth/logout", headers=api_only.admin)
    async with api_only.state.db.read() as conn:
        assert (await conn.execute(select(Session.id))).all() == []


async def test_the_audit_trail_says_who_changed_what(api: Api) -> None:
    member = await api.member("xia")
    test_id = await api.gate_test()
    theirs = (await api.run(test_id, headers=member, priority=10))["id"]
    await api.client.post(f"{V1}/executions/queue/pause", headers=api.admin)
    await api.client.post(f"{V1}/executions/{theirs}/cancel", headers=api.admin)
    await api.client.put(
        f"{V1}/executions/queue/settings", json={"max_concurrent": 3}, headers=api.admin
    )
    await api.run(test_id)
    await api.client.post(f"{V1}/executions/queue/clear", headers=api.admin)
    await api.client.post(f"{V1}/executions/queue/resume", headers=api.admin)
    assert (await api.client.get(f"{V1}/audit", headers=member)).status_code == 403
    xia = next(u for u in await api.get("/users") if u["username"] == "xia")
    await api.client.patch(f"{V1}/users/{xia['id']}", json={"role": "admin"}, headers=api.admin)

    trail = await api.get("/audit")
    actions = [(e["actor_name"], e["action"], e["target"]) for e in reversed(trail["items"])]
    assert actions == [
        ("admin", "user.create", "xia"),
        ("admin", "queue.pause", ""),
        ("admin", "execution.cancel", f"execution {theirs}"),
        ("admin", "queue.slots", ""),
        ("admin", "queue.clear", ""),
        ("admin", "queue.resume", ""),
        ("admin", "user.role", "xia"),
    ]
    assert trail["total"] == 7
    detail = {e["action"]: e["detail"] for e in trail["items"]}
    assert detail["queue.clear"] == {"removed": 1} and detail["queue.slots"] == {"slots": 3}
    async with api.dashboard() as browser:
        page = await browser.client.get("/admin")
        assert page.status_code == 200 and "queue.clear" in page.text


async def test_cancelling_your_own_run_is_not_audited(api_only: Api) -> None:
    test_id = await api_only.gate_test()
    mine = (await api_only.run(test_id))["id"]
    await api_only.client.post(f"{V1}/executions/{mine}/cancel", headers=api_only.admin)
    assert (await api_only.get("/audit"))["total"] == 0
