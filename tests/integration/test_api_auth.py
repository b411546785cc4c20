"""Accounts and tokens: sign in, who am I, who may make accounts, which tokens open nothing."""

from __future__ import annotations

import time
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from sqlalchemy import delete, update

from conftest import ADMIN_PASSWORD
from testqueue import security
from testqueue.models import User

LOGIN = "/api/v1/auth/login"
TOKEN_PROBLEMS = "sign in again"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _signed(state: Any, claims: dict[str, Any]) -> str:
    """A token signed with the right key around claims of the caller's choosing."""
    full = {"exp": int(time.time()) + 600, **claims}
    return jwt.encode(full, state.accounts.secret_key, algorithm=security.ALGORITHM)


def assert_unauthorized(response: Any, detail_says: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert detail_says in response.json()["detail"], response.text


async def usernames(api: Any) -> list[str]:
    return [user["username"] for user in await api.get("/users")]


async def test_login_gives_a_bearer_token_that_names_the_account(api_only: Any) -> None:
    response = await api_only.client.post(
        LOGIN, data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api_only.state.settings.access_token_ttl
    me = await api_only.get("/users/me", headers=bearer(body["access_token"]))
    assert (me["username"], me["role"], me["is_active"]) == ("admin", "admin", True)
    assert "password_hash" not in me and "password" not in me


async def test_login_refuses_a_wrong_password_and_an_unknown_user_alike(api_only: Any) -> None:
    await api_only.member("alice")
    for username, password in [
        ("admin", "not-the-password"),
        ("alice", ADMIN_PASSWORD),
        ("nobody", "whatever-password"),
        ("admin\0", ADMIN_PASSWORD),
    ]:
        response = await api_only.client.post(
            LOGIN, data={"username": username, "password": password}
        )
        assert_unauthorized(response, "wrong username or password")
        assert "access_token" not in response.text


async def test_an_unknown_name_costs_a_password_check_like_a_known_one(
    api_only: Any, monkeypatch: Any
) -> None:
    """Same work, so the answer's timing does not tell which names exist."""
    checked: list[str] = []
    accounts = api_only.state.accounts
    hasher = accounts.hasher

    class Counting(PasswordHasher):
        def verify(self, encoded: str | bytes, password: str | bytes) -> Literal[True]:
            checked.append(str(password))
            verified: Literal[True] = hasher.verify(encoded, password)
            return verified

    monkeypatch.setattr(accounts, "hasher", Counting(time_cost=1, memory_cost=1024))
    for username in ("admin", "nobody"):
        response = await api_only.client.post(
            LOGIN, data={"username": username, "password": f"wrong-for-{username}"}
        )
        assert_unauthorized(response, "wrong username or password")
    assert checked == ["wrong-for-admin", "wrong-for-nobody"]


async def test_login_without_the_form_fields_says_which_is_missing(api_only: Any) -> None:
    for form in ({"username": "admin"}, {"username": "admin", "password": ""}):
        response = await api_only.client.post(LOGIN, data=form)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["msg"] == "password: Field required"


async def test_routes_refuse_a_missing_or_bad_token_and_write_nothing(api_only: Any) -> None:
    state = api_only.state
    admin_id = (await api_only.get("/users/me"))["id"]
    refused = {
        "no header": ({}, "Sign in first"),
        "another scheme": ({"Authorization": "Basic YWRtaW46eA=="}, "Sign in first"),
        "empty bearer": ({"Authorization": "Bearer "}, "Sign in first"),
        "garbage": (bearer("not.a.token"), TOKEN_PROBLEMS),
        "expired": (
            bearer(security.create_token(state.accounts.secret_key, admin_id, -10, "s")),
            "expired",
        ),
        "other key": (
            bearer(security.create_token("another-key-" * 4, admin_id, 600, "s")),
            "not valid",
        ),
        "unknown session": (
            bearer(security.create_token(state.accounts.secret_key, admin_id, 600, "nope")),
            "this session has ended",
        ),
        "huge user id": (bearer(_signed(state, {"sub": "9" * 30, "sid": "s"})), "not valid"),
        "arabic digit": (bearer(_signed(state, {"sub": "\u0661", "sid": "s"})), "not valid"),
        "number subject": (bearer(_signed(state, {"sub": 1, "sid": "s"})), "not valid"),
        "no session": (bearer(_signed(state, {"sub": "1"})), "not valid"),
    }
    body = {"title": "must not be written", "command": ["true"]}
    for name, (headers, detail) in refused.items():
        read = await api_only.client.get("/api/v1/users/me", headers=headers)
        assert_unauthorized(read, detail)
        write = await api_only.client.post("/api/v1/tests", json=body, headers=headers)
        assert_unauthorized(write, detail)
        assert (await api_only.get("/tests"))["total"] == 0, name


async def test_health_needs_no_token(api_only: Any) -> None:
    response = await api_only.client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "worker": False}


async def test_admin_creates_accounts_that_can_sign_in(api_only: Any) -> None:
    response = await api_only.client.post(
        "/api/v1/users",
        json={"username": "bob", "password": "bob-password", "role": "admin"},
        headers=api_only.admin,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["username"], created["role"], created["is_active"]) == ("bob", "admin", True)
    assert "password_hash" not in created
    me = await api_only.get("/users/me", headers=await api_only.login("bob", "bob-password"))
    assert me["id"] == created["id"]


async def test_members_may_not_create_accounts(api_only: Any) -> None:
    member = await api_only.member("carol")
    response = await api_only.client.post(
        "/api/v1/users",
        json={"username": "mallory", "password": "mallory-password", "role": "admin"},
        headers=member,
    )
    assert response.status_code == 403, response.text
    assert "admin" in response.json()["detail"]
    listing = await api_only.client.get("/api/v1/users", headers=member)
    assert listing.status_code == 403
    assert await usernames(api_only) == ["admin", "carol"]


async def test_account_creation_refuses_taken_names_and_bad_fields(api_only: Any) -> None:
    await api_only.member("dave")
    cases = [
        ({"username": "dave", "password": "other-password"}, 409, "taken"),
        ({"username": "erin", "password": "short"}, 422, "password"),
        ({"username": "erin", "password": "erin-password", "role": "root"}, 422, "role"),
        ({"username": "er in", "password": "erin-password"}, 422, "username"),
        ({"username": "", "password": "erin-password"}, 422, "username"),
        ({"username": "erin"}, 422, "password"),
        ({"username": "erin", "password": "erin-password", "admin": True}, 422, "admin"),
    ]
    for body, code, detail in cases:
        response = await api_only.client.post("/api/v1/users", json=body, headers=api_only.admin)
        assert response.status_code == code, (body, response.text)
        assert detail in str(response.json()["detail"]), (body, response.text)
    assert await usernames(api_only) == ["admin", "dave"]


async def test_tokens_of_disabled_or_deleted_accounts_stop_working(api_only: Any) -> None:
    frank = await api_only.member("frank")
    grace = await api_only.member("grace")
    async with api_only.state.db.write() as conn:
        await conn.execute(update(User).where(User.username == "frank").values(is_active=False))
        await conn.execute(delete(User).where(User.username == "grace"))
    for headers, says in ((frank, "this account is disabled"), (grace, "session has ended")):
        response = await api_only.client.get("/api/v1/users/me", headers=headers)
        assert_unauthorized(response, says)
    again = await api_only.client.post(
        LOGIN, data={"username": "frank", "password": "frank-password"}
    )
    assert_unauthorized(again, "wrong username or password")
