"""The dashboard end to end: a real `testqueue serve` and a real headless Chromium.

One server serves the whole module; each test queues its runs behind its own
gate folder and releases them when done, so every test starts on an idle
queue. Waiting is Playwright's auto-waiting `expect`, never a sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import served
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from testqueue.runners.chromium import CHROMIUM_ARGS

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
LAPTOP: ViewportSize = {"width": 1280, "height": 900}
# The README picture: rewritten only by `UPDATE_SCREENSHOTS=1 make test`.
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "queue.png"
MEMBER, MEMBER_PASSWORD = "mia", "mia-password-1"
WAIT_MS = 10_000
# SHUTDOWN_GRACE is 1 s; a stream that held shutdown up would take minutes.
STOP_PROMPTLY_S = 8.0
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to end the process.
STOPPED_CLEANLY = (0, -signal.SIGTERM)


@pytest.fixture(scope="module", autouse=True)
def patient_expect() -> Iterator[None]:
    """A longer wait for this module's expectations (a loaded CI host is slow to spawn)."""
    expect.set_options(timeout=WAIT_MS)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[served.Server]:
    instance = served.start(tmp_path_factory.mktemp("dashboard"))
    yield instance
    assert instance.terminate() in STOPPED_CLEANLY, instance.log()[-4000:]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(server: served.Server) -> AsyncIterator[served.Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        api = served.Api(client)
        api.admin = await api.sign_in("admin", served.ADMIN_PASSWORD)
        await api.create_member(MEMBER, MEMBER_PASSWORD)
        yield api


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS)
        )
        yield chromium
        await chromium.close()


async def signed_in_state(browser: Browser, base_url: str, username: str, password: str) -> Any:
    """Cookies of a browser that signed in through the form, for other contexts to reuse."""
    ctx = await browser.new_context(base_url=base_url)
    try:
        await sign_in(await ctx.new_page(), username, password)
        return await ctx.storage_state()
    finally:
        await ctx.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def admin_state(browser: Browser, server: served.Server) -> Any:
    return await signed_in_state(browser, server.base_url, "admin", served.ADMIN_PASSWORD)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def member_state(browser: Browser, server: served.Server, api: served.Api) -> Any:
    return await signed_in_state(browser, server.base_url, MEMBER, MEMBER_PASSWORD)


@pytest_asyncio.fixture(loop_scope="module")
async def context(
    browser: Browser, server: served.Server, admin_state: Any
) -> AsyncIterator[BrowserContext]:
    """A browser signed in as admin."""
    ctx = await browser.new_context(
        base_url=server.base_url, viewport=LAPTOP, storage_state=admin_state
    )
    yield ctx
    await ctx.close()


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


@pytest_asyncio.fixture(loop_scope="module")
async def gated(api: served.Api, gates: Path) -> AsyncIterator[int]:
    """A command test case whose runs hold their slot until the test opens their gate."""
    await api.wait_idle()
    test_case_id = await api.create_test("Checkout flow", served.gated_argv(gates))
    yield test_case_id
    (gates / "all").touch()
    await api.wait_idle()


async def sign_in(page: Page, username: str, password: str) -> None:
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/signin\?next=%2F$"))
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()


async def open_queue(context: BrowserContext) -> Page:
    """The queue page, once its event stream is open (from then on it is live)."""
    page = await context.new_page()
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
    await expect(page.locator("#live")).to_have_attribute("data-state", "on")
    return page


def running_rows(page: Page) -> Locator:
    return page.locator("tbody[data-list=running] > tr")


def pending_rows(page: Page) -> Locator:
    return page.locator("tbody[data-list=line] > tr")


async def test_sign_in_uses_a_safe_cookie_and_sign_out_ends_it(
    browser: Browser, server: served.Server
) -> None:
    context = await browser.new_context(base_url=server.base_url, viewport=LAPTOP)
    page = await context.new_page()
    await page.goto("/")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    await page.get_by_label("Password").fill(served.ADMIN_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
    (cookie,) = [c for c in await context.cookies() if c["name"] == "testqueue_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert not [c for c in await context.cookies() if c["name"] == "testqueue_session"]
    await page.goto("/history")
    await expect(page).to_have_url(re.compile(r"/signin\?next=%2Fhistory$"))
    await context.close()


async def test_eight_runs_on_five_slots_and_a_run_moves_up_live(
    context: BrowserContext, api: served.Api, gated: int, gates: Path
) -> None:
    page = await open_queue(context)
    ids = [await api.run(gated) for _ in range(7)]
    await expect(running_rows(page)).to_have_count(5)

    # The eighth from the page's own form, at the highest priority: first in line.
    await page.get_by_label("Test case", exact=True).select_option(str(gated))
    await page.get_by_label("Priority", exact=True).select_option("1")
    await page.get_by_role("button", name="Run", exact=True).click()
    await expect(page.locator("#notice")).to_contain_text("queued at position 1")

    await expect(running_rows(page)).to_have_count(5)
    await expect(pending_rows(page)).to_have_count(3)
    await expect(page.locator("tbody[data-list=line] [data-field=position]")).to_have_text(
        ["1", "2", "3"]
    )
    await expect(page.locator(".summary")).to_contain_text("5 of 5 slots busy")
    await expect(page.locator(".summary")).to_contain_text("3 pending")
    first_in_line = await pending_rows(page).first.get_attribute("data-id")
    assert first_in_line is not None and int(first_in_line) not in ids[:5]
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.write_bytes(await page.screenshot(full_page=True))

    # Mark this document: a reload would lose the mark.
    await page.evaluate("window.stillTheSamePage = true")
    (gates / str(ids[0])).touch()
    await expect(
        page.locator(f"tbody[data-list=running] > tr[data-id='{first_in_line}']")
    ).to_be_visible()
    await expect(page.locator(f"tbody[data-list=running] > tr[data-id='{ids[0]}']")).to_have_count(
        0
    )
    await expect(pending_rows(page)).to_have_count(2)
    await expect(page.locator("tbody[data-list=line] [data-field=position]")).to_have_text(
        ["1", "2"]
    )
    assert await page.evaluate("window.stillTheSamePage") is True


async def test_cancel_and_reprioritise_from_the_page(
    context: BrowserContext, api: served.Api, gated: int
) -> None:
    ids = [await api.run(gated) for _ in range(7)]
    page = await open_queue(context)
    await expect(pending_rows(page)).to_have_count(2)

    # Raising the second one's priority moves it to the front of the line.
    second = pending_rows(page).nth(1)
    assert await second.get_attribute("data-id") == str(ids[6])
    await second.get_by_role("button", name=f"Raise priority of execution #{ids[6]}").click()
    await expect(pending_rows(page).first).to_have_attribute("data-id", str(ids[6]))

    row = page.locator(f"tbody[data-list=line] > tr[data-id='{ids[5]}']")
    await row.get_by_role("button", name=f"Cancel execution #{ids[5]}").click()
    await expect(row).to_have_count(0)
    await expect(pending_rows(page)).to_have_count(1)
    assert (await api.execution(ids[5]))["status"] == "cancelled"


async def test_a_member_sees_no_admin_controls_and_a_forged_clear_is_refused(
    browser: Browser, server: served.Server, api: served.Api, gated: int, member_state: Any
) -> None:
    for _ in range(7):
        await api.run(gated)
    ctx = await browser.new_context(
        base_url=server.base_url, viewport=LAPTOP, storage_state=member_state
    )
    try:
        page = await open_queue(ctx)
        await expect(pending_rows(page)).to_have_count(2)
        await expect(page.get_by_role("heading", name="Admin")).to_have_count(0)
        await expect(page.get_by_role("link", name="Clear queue…")).to_have_count(0)
        await expect(page.get_by_label("Slots", exact=True)).to_have_count(0)
        # The admin's runs are not the member's to cancel or move.
        await expect(
            pending_rows(page).first.get_by_role("button", name=re.compile("Cancel"))
        ).to_be_hidden()

        csrf = await page.locator("input[name=csrf]").first.input_value()
        forms: list[dict[str, str | float | bool]] = [
            {"csrf": csrf, "confirm": "yes"},
            {"confirm": "yes"},
        ]
        for form in forms:
            refused = await page.request.post(
                "/queue/clear", form=form, headers={"Accept": "application/json"}
            )
            assert refused.status == 403
        slots = await page.request.post("/queue/slots", form={"csrf": csrf, "slots": "50"})
        assert slots.status == 403
        assert "only an admin may do this" in await slots.text()
    finally:
        await ctx.close()
    status = await api.status()
    assert (status["queued_count"], status["max_concurrent"]) == (2, 5)


async def test_an_admin_clears_the_queue_after_confirming(
    context: BrowserContext, api: served.Api, gated: int
) -> None:
    for _ in range(8):
        await api.run(gated)
    page = await open_queue(context)
    await expect(pending_rows(page)).to_have_count(3)

    # Forms that change something need the session's CSRF token, even an admin's.
    forged = await page.request.post("/queue/clear", form={"confirm": "yes"})
    assert forged.status == 403

    await page.get_by_role("link", name="Clear queue…").click()
    dialog = page.get_by_role("dialog", name="Clear the queue?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Keep them").click()
    await expect(dialog).to_be_hidden()
    await expect(pending_rows(page)).to_have_count(3)

    await page.get_by_role("link", name="Clear queue…").click()
    await dialog.get_by_role("button", name="Cancel all pending").click()
    await expect(page.locator("#notice")).to_have_text(
        "Queue cleared: 3 pending executions cancelled."
    )
    await expect(pending_rows(page)).to_have_count(0)
    await expect(running_rows(page)).to_have_count(5)
    await expect(page.get_by_text("Nothing is waiting.")).to_be_visible()


async def test_a_form_error_is_shown_next_to_its_field(context: BrowserContext) -> None:
    page = await open_queue(context)
    await page.get_by_role("link", name="Test cases").click()
    await page.get_by_role("link", name="New test case").click()
    await page.get_by_label("Runner").select_option("browser")
    await page.get_by_label("Steps").fill('[{"action": "goto"}]')
    await page.get_by_role("button", name="Create test case").click()

    title = page.get_by_label("Title")
    await expect(title).to_have_attribute("aria-invalid", "true")
    error = page.locator("#f-title-error")
    await expect(error).to_contain_text("at least 1 character")
    assert "f-title-error" in (await title.get_attribute("aria-describedby") or "")
    # The error sits with its field, not only in the summary at the top.
    field = page.locator(".field", has=title)
    await expect(field.locator(".field-error")).to_have_count(1)

    await title.fill("Home page")
    await page.get_by_role("button", name="Create test case").click()
    await expect(page.locator("#f-steps-error")).to_contain_text("step 1 (goto): missing 'url'")
    await expect(page.get_by_label("Title")).to_have_value("Home page")

    await page.get_by_label("Steps").fill('[{"action": "goto", "url": "https://example.com/"}]')
    await page.get_by_role("button", name="Create test case").click()
    await expect(page.locator("#notice")).to_contain_text("created")
    await expect(page.get_by_role("heading", name=re.compile("Home page"))).to_be_visible()


async def test_the_execution_page_follows_the_log_and_status_live(
    context: BrowserContext, api: served.Api, gated: int, gates: Path
) -> None:
    execution_id = await api.run(gated)
    page = await open_queue(context)
    await page.goto(f"/executions/{execution_id}")
    await expect(page.locator("#log")).to_contain_text(f"started {execution_id}")
    await expect(page.locator("#facts")).to_contain_text("running")
    await page.evaluate("window.stillTheSamePage = true")

    (gates / str(execution_id)).touch()
    await expect(page.locator("#facts .badge")).to_have_text("pass")
    await expect(page.locator("#log")).to_contain_text(f"finished {execution_id}")
    await expect(page.locator("#live")).to_have_attribute("data-state", "done")
    await expect(page.get_by_role("button", name="Cancel execution")).to_be_hidden()
    assert await page.evaluate("window.stillTheSamePage") is True


async def test_history_and_test_cases_pages(context: BrowserContext, api: served.Api) -> None:
    test_case_id = await api.create_test("Nightly smoke", ["true"])
    execution_id = await api.run(test_case_id)
    await api.wait_idle()
    page = await open_queue(context)
    await page.get_by_role("link", name="History").click()
    await page.get_by_label("Test case", exact=True).select_option(str(test_case_id))
    await page.get_by_label("Result").select_option("pass")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=f"#{execution_id}", exact=True)).to_be_visible()
    await expect(page.locator("tbody tr")).to_have_count(2)  # one trend row, one execution
    await expect(
        page.get_by_role("img", name=re.compile("pass rate over time, 100%"))
    ).to_be_visible()

    await page.get_by_role("link", name="Test cases").click()
    await page.get_by_label("Search titles").fill("nightly")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.get_by_role("button", name="Run Nightly smoke").click()
    await expect(page.locator("#notice")).to_contain_text("queued at position")
    await api.wait_idle()


async def test_the_server_stops_promptly_with_a_live_stream_open(tmp_path: Path) -> None:
    """uvicorn waits for open responses on shutdown; the event stream must not hold it up."""
    instance = await asyncio.to_thread(served.start, tmp_path / "server")
    try:
        async with httpx.AsyncClient(base_url=instance.base_url, timeout=10.0) as client:
            await sign_in_over_http(client)
            async with client.stream("GET", "/events/queue") as stream:
                lines = stream.aiter_lines()
                while (await anext(lines)) != "event: queue":
                    pass
                loop = asyncio.get_running_loop()
                began = loop.time()
                code = await asyncio.to_thread(instance.terminate)
                assert code in STOPPED_CLEANLY, instance.log()[-4000:]
                assert loop.time() - began < STOP_PROMPTLY_S
                async for _line in lines:
                    pass  # the stream ended rather than being cut mid-event
    finally:
        await asyncio.to_thread(instance.stop)


async def sign_in_over_http(client: httpx.AsyncClient) -> None:
    form = await client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    signed_in = await client.post(
        "/signin", data={"username": "admin", "password": served.ADMIN_PASSWORD, "csrf": csrf[1]}
    )
    assert signed_in.status_code == 303, signed_in.text
