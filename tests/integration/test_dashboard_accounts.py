"""The dashboard's account, admin and delete pages do what the API does, with the same rules."""

from __future__ import annotations

import re

from conftest import Api


async def test_a_token_made_on_the_account_page_is_shown_once_and_works(api_only: Api) -> None:
    async with api_only.dashboard() as browser:
        made = await browser.post("/account/tokens", name="from the page", expires_in_days="7")
        assert made.status_code == 201
        found = re.search(r'<code class="token" id="new-token">(tq_[^<]+)</code>', made.text)
        assert found is not None
        token = found[1]
        again = await browser.client.get("/account")
        assert token not in again.text and "from the page" in again.text
        me = await api_only.client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.json()["username"] == "admin"
        (listed,) = await api_only.get("/users/me/tokens")
        revoked = await browser.post(f"/account/tokens/{listed['id']}/revoke")
        assert revoked.status_code == 303
        assert await api_only.get("/users/me/tokens") == []


async def test_the_admin_page_changes_accounts_and_members_cannot_open_it(api_only: Api) -> None:
    await api_only.member("yan")
    yan = next(u for u in await api_only.get("/users") if u["username"] == "yan")
    async with api_only.dashboard("yan", "yan-password") as member:
        refused = await member.client.get("/admin")
        assert refused.status_code == 403
        refused = await member.post(f"/admin/users/{yan['id']}", role="admin")
        assert refused.status_code == 403
    async with api_only.dashboard() as browser:
        page = await browser.client.get("/admin")
        assert page.status_code == 200 and "yan" in page.text
        changed = await browser.post(f"/admin/users/{yan['id']}", role="admin", active="no")
        assert changed.status_code == 303
        admin_id = (await api_only.get("/users/me"))["id"]
        last = await browser.post(f"/admin/users/{admin_id}", role="member")
        assert last.status_code == 409 and "the last active admin" in last.text
    users = {u["username"]: u for u in await api_only.get("/users")}
    assert (users["yan"]["role"], users["yan"]["is_active"]) == ("admin", False)


async def test_deleting_a_test_case_asks_first_then_archives_it(api_only: Api) -> None:
    test_id = await api_only.command_test(["true"], title="to go")
    await api_only.run(test_id)
    async with api_only.dashboard() as browser:
        asking = await browser.client.get(f"/tests/{test_id}/delete")
        assert asking.status_code == 200 and "1</strong> pending run" in asking.text
        unconfirmed = await browser.post(f"/tests/{test_id}/delete")
        assert unconfirmed.status_code == 400
        deleted = await browser.post(f"/tests/{test_id}/delete", confirm="yes")
        assert deleted.status_code == 303
        page = await browser.client.get(f"/tests/{test_id}")
        assert "was deleted on" in page.text and 'action="/runs"' not in page.text
        listing = await browser.client.get("/tests")
        assert "to go" not in listing.text
        history = await browser.client.get(f"/history?test_case={test_id}")
        assert "to go" in history.text
