"""The browser runner against pages this suite serves: real Chromium, no mocks.

Every test calls `BrowserRunner.run` directly with an in-memory reporter. Waits
are on events (the page server says when a browser is waiting on it) or on the
runner's own deadline, never on a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser_pages import Pages, serve_pages

from conftest import make_settings, spec_for
from testqueue import artifacts
from testqueue.config import Settings
from testqueue.runners import Registry
from testqueue.runners.base import Runner, RunSpec
from testqueue.runners.browser import BrowserRunner
from testqueue.vocabulary import ArtifactRecord, Outcome, Result, StepRecord
from waiting import allowance

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
RUN_BUDGET_S = 30.0

LOGIN_AS_ALICE: list[dict[str, Any]] = [
    {"action": "goto", "url": "/login", "description": "open the sign-in page"},
    {"action": "expect_title", "equals": "Sign in"},
    {"action": "expect_hidden", "selector": "#tip"},
    {"action": "hover", "selector": "#help"},
    {"action": "expect_visible", "selector": "#tip"},
    {"action": "fill", "selector": "#username", "value": "alice"},
    {"action": "fill", "selector": "#password", "value": "secret"},
    {"action": "select", "selector": "#role", "value": "dev"},
    {"action": "check", "selector": "#remember"},
    {"action": "screenshot", "name": "filled"},
    {"action": "press", "selector": "#password", "key": "Enter"},
    {"action": "wait_for", "state": "load"},
    {"action": "expect_url", "contains": "/welcome"},
    {"action": "expect_text", "selector": "#greeting", "equals": "Welcome, alice"},
    {"action": "expect_text", "selector": "#role", "regex": "^de.$"},
    {"action": "expect_text", "selector": "#remember", "contains": "on"},
    {"action": "goto", "url": "/delayed"},
    {"action": "wait_for", "selector": "#ready", "state": "visible"},
    {"action": "expect_text", "selector": "#status", "contains": "Ready"},
    {"action": "click", "selector": "role=button[name='Done']"},
    {"action": "expect_text", "selector": "#status", "equals": "Done"},
]


@dataclass
class Recorder:
    """A Reporter that keeps everything in memory."""

    logs: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: list[ArtifactRecord] = field(default_factory=list)

    def log(self, text: str) -> None:
        assert text.endswith("\n"), "the log is a stream of whole lines"
        self.logs.append(text.removesuffix("\n"))

    def step(self, step: StepRecord) -> None:
        self.steps.append(step)

    def artifact(self, artifact: ArtifactRecord) -> None:
        self.artifacts.append(artifact)

    def results(self) -> list[str]:
        return [step.result for step in self.steps]


def settings_at(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(f"sqlite:///{tmp_path / 't.db'}", tmp_path, **overrides)


def spec(steps: list[Any], execution_id: int = 1, **fields: Any) -> RunSpec:
    return spec_for(
        None,
        execution_id=execution_id,
        runner="browser",
        timeout_s=RUN_BUDGET_S,
        steps=steps,
        **fields,
    )


async def run(
    runner: BrowserRunner,
    run_spec: RunSpec,
    *,
    budget_s: float = RUN_BUDGET_S,
    cancel: asyncio.Event | None = None,
) -> tuple[Outcome, Recorder]:
    recorder = Recorder()
    deadline = asyncio.get_running_loop().time() + budget_s
    outcome = await runner.run(
        run_spec, deadline=deadline, cancel=cancel or asyncio.Event(), report=recorder
    )
    return outcome, recorder


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    async with serve_pages() as served:
        yield served


@pytest.fixture
def browser_settings(tmp_path: Path) -> Settings:
    return settings_at(tmp_path)


@pytest.fixture
async def runner(browser_settings: Settings) -> AsyncIterator[BrowserRunner]:
    browser_runner = BrowserRunner(browser_settings)
    try:
        yield browser_runner
    finally:
        await browser_runner.close()


async def test_every_step_passes(
    runner: BrowserRunner, pages: Pages, browser_settings: Settings
) -> None:
    run_spec = spec(LOGIN_AS_ALICE, test_data={"base_url": pages.base_url})

    outcome, recorder = await run(runner, run_spec)

    assert outcome == Outcome(Result.PASS), recorder.logs
    assert recorder.results() == ["pass"] * len(LOGIN_AS_ALICE)
    assert [s.number for s in recorder.steps] == list(range(1, len(LOGIN_AS_ALICE) + 1))
    assert recorder.steps[0].description == "open the sign-in page"
    assert recorder.steps[1].description == "expect_title"
    assert "console log: login page ready" in recorder.logs
    assert any(line.startswith("step 20 click role=button") for line in recorder.logs)
    shot = recorder.steps[9]
    assert shot.screenshot == "step-10-filled.png"
    [artifact] = recorder.artifacts  # a passing run keeps no trace
    assert artifact.kind == "screenshot"
    assert artifact.path.read_bytes().startswith(PNG_MAGIC)
    assert artifact.path.parent == artifacts.execution_dir(browser_settings, 1)


async def test_failed_expectation_skips_the_rest_and_keeps_evidence(
    runner: BrowserRunner, pages: Pages
) -> None:
    steps: list[dict[str, Any]] = [
        {"action": "goto", "url": f"{pages.base_url}/login"},
        {"action": "fill", "selector": "#username", "value": "alice"},
        {"action": "fill", "selector": "#password", "value": "wrong"},
        {"action": "click", "selector": "#submit"},
        {"action": "expect_text", "selector": "#greeting", "equals": "Welcome, alice"},
        {"action": "expect_url", "contains": "/welcome"},
        {"action": "screenshot"},
    ]
    steps[4]["timeout_ms"] = 500

    outcome, recorder = await run(runner, spec(steps, execution_id=7))

    assert outcome.result is Result.FAIL
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("step 5 (expect_text #greeting) failed")
    assert recorder.results() == ["pass", "pass", "pass", "pass", "fail", "skip", "skip"]
    failed = recorder.steps[4]
    assert failed.screenshot == "step-05-failure.png"
    by_kind = {a.kind: a for a in recorder.artifacts}
    assert by_kind["screenshot"].path.read_bytes().startswith(PNG_MAGIC)
    assert by_kind["trace"].content_type == "application/zip"
    assert by_kind["trace"].path.read_bytes().startswith(ZIP_MAGIC)
    assert any(line.startswith("step 5 expect_text #greeting: fail (") for line in recorder.logs)


async def test_step_that_cannot_run_is_an_error(runner: BrowserRunner, pages: Pages) -> None:
    steps = [
        {"action": "goto", "url": "/login"},
        {"action": "click", "selector": "#no-such-button", "timeout_ms": 300},
        {"action": "expect_title", "equals": "Sign in"},
    ]

    outcome, recorder = await run(runner, spec(steps, base_url=pages.base_url))

    assert outcome.result is Result.ERROR
    assert recorder.results() == ["pass", "error", "skip"]
    assert "300ms" in (recorder.steps[1].error_message or "")
    assert "Call log" not in (recorder.steps[1].error_message or "")


async def test_deadline_mid_step_times_out_and_records_the_step(
    runner: BrowserRunner, pages: Pages
) -> None:
    steps = [
        {"action": "goto", "url": "/delayed"},
        {"action": "expect_visible", "selector": "#never-there", "timeout_ms": 60_000},
        {"action": "click", "selector": "#ready"},
    ]
    await run(runner, spec([{"action": "goto", "url": pages.base_url + "/login"}]))  # warm
    loop = asyncio.get_running_loop()
    started = loop.time()

    outcome, recorder = await run(runner, spec(steps, base_url=pages.base_url), budget_s=1.5)

    assert loop.time() - started < allowance(3.0)
    assert outcome.result is Result.TIMEOUT
    assert outcome.error_message == "timed out at step 2 (expect_visible #never-there)"
    assert recorder.results() == ["pass", "error", "skip"]
    assert recorder.steps[1].error_message == "timed out"


async def test_cancel_while_the_page_loads_returns_within_a_second(
    runner: BrowserRunner, pages: Pages
) -> None:
    cancel = asyncio.Event()
    steps = [{"action": "goto", "url": "/hang"}, {"action": "expect_title", "equals": "x"}]
    task = asyncio.create_task(run(runner, spec(steps, base_url=pages.base_url), cancel=cancel))
    await asyncio.wait_for(pages.hang_started.wait(), RUN_BUDGET_S)
    loop = asyncio.get_running_loop()
    within = allowance(1.0)

    cancelled_at = loop.time()
    cancel.set()
    outcome, recorder = await asyncio.wait_for(task, 5.0 + within)

    assert loop.time() - cancelled_at < within
    assert outcome.result is None
    assert outcome.error_message == "cancelled at step 1 (goto /hang)"
    assert recorder.results() == ["error", "skip"]
    assert recorder.steps[0].error_message == "cancelled"


async def test_five_runs_at_once_share_one_browser_but_not_cookies(
    runner: BrowserRunner, pages: Pages
) -> None:
    def sign_in(user: str) -> list[dict[str, Any]]:
        return [
            {"action": "goto", "url": "/whoami"},
            {"action": "expect_text", "selector": "#who", "equals": "anonymous"},
            {"action": "goto", "url": "/login"},
            {"action": "fill", "selector": "#username", "value": user},
            {"action": "fill", "selector": "#password", "value": "secret"},
            {"action": "click", "selector": "#submit"},
            {"action": "expect_url", "contains": "/welcome"},
            # The gate answers only once all five are signed in and waiting on it.
            {"action": "goto", "url": "/gate"},
            {"action": "expect_text", "selector": "#who", "equals": user},
        ]

    users = [f"user{i}" for i in range(5)]
    results = await asyncio.gather(
        *(
            run(runner, spec(sign_in(user), execution_id=i, base_url=pages.base_url))
            for i, user in enumerate(users)
        )
    )

    for outcome, recorder in results:
        assert outcome == Outcome(Result.PASS), recorder.logs
    assert pages.at_gate == 5
    assert runner.launches == 1  # five cold first runs started one browser between them
    assert runner.open_browsers == 1


async def test_browser_is_recycled_after_n_runs(tmp_path: Path, pages: Pages) -> None:
    runner = BrowserRunner(settings_at(tmp_path, browser_recycle_after=2))
    one_step = spec([{"action": "goto", "url": "/whoami"}], base_url=pages.base_url)
    try:
        outcomes = [(await run(runner, one_step))[0] for _ in range(5)]
        assert runner.launches == 3
        assert runner.open_browsers == 1
    finally:
        await runner.close()
    assert outcomes == [Outcome(Result.PASS)] * 5
    assert runner.open_browsers == 0


async def test_a_crashed_browser_is_replaced(runner: BrowserRunner, pages: Pages) -> None:
    one_step = spec([{"action": "goto", "url": "/whoami"}], base_url=pages.base_url)
    assert (await run(runner, one_step))[0] == Outcome(Result.PASS)
    killed = _kill_our_chromium()
    assert killed, "no Chromium child process found"

    outcome, recorder = await run(runner, one_step)

    assert outcome == Outcome(Result.PASS), recorder.logs
    assert runner.launches == 2


async def test_invalid_steps_are_an_error_without_a_browser(runner: BrowserRunner) -> None:
    steps = [{"action": "goto", "url": "/"}, {"action": "click"}]

    outcome, _ = await run(runner, spec(steps))

    assert outcome.result is Result.ERROR
    assert outcome.error_message == "invalid steps: step 2 (click): missing 'selector'"
    assert runner.launches == 0


async def test_only_chromium_is_available(runner: BrowserRunner) -> None:
    outcome, _ = await run(runner, spec([{"action": "goto", "url": "/"}], browser="firefox"))

    assert outcome.result is Result.ERROR
    assert "chromium only" in (outcome.error_message or "")


async def test_missing_chromium_says_how_to_install_one(tmp_path: Path) -> None:
    settings = settings_at(tmp_path, chromium_path=str(tmp_path / "no-such-chromium"))
    runner = BrowserRunner(settings)
    try:
        outcome, recorder = await run(runner, spec([{"action": "goto", "url": "/"}]))
    finally:
        await runner.close()

    assert outcome.result is Result.ERROR
    message = outcome.error_message or ""
    assert "no-such-chromium" in message
    assert "apt-get install" in message
    assert "CHROMIUM_PATH" in message
    assert recorder.logs == [message]


async def test_a_chromium_that_will_not_start_is_an_error(tmp_path: Path) -> None:
    runner = BrowserRunner(settings_at(tmp_path, chromium_path="/bin/false"))
    try:
        outcome, recorder = await run(runner, spec([{"action": "goto", "url": "/"}]))
    finally:
        await runner.close()

    assert outcome.result is Result.ERROR
    assert (outcome.error_message or "").startswith("could not start Chromium (/bin/false): ")
    assert recorder.results() == ["skip"]


def test_registry_builds_the_browser_runner(tmp_path: Path) -> None:
    built: Runner = Registry(settings_at(tmp_path)).get("browser")
    conforms: Runner = BrowserRunner(settings_at(tmp_path))  # mypy checks the protocol here

    assert isinstance(built, BrowserRunner)
    assert conforms.kind == "browser"


def _kill_our_chromium() -> list[int]:
    """SIGKILL the Chromium browser processes started by this test process."""
    killed = []
    for pid in _descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--remote-debugging-pipe" in cmdline and not any(
            arg.startswith(b"--type=") for arg in cmdline
        ):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
