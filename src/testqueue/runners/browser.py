"""The browser runner: the steps of a test case, in a real Chromium, through Playwright.

Every execution gets a fresh browser context (its own cookies and storage) in
the Chromium that all browser runs of the process share (`chromium.ChromiumPool`
launches it on first use and recycles it). A step that fails an expectation is
`fail`; a step that cannot run (navigation error, no such element in time) is
`error`; the steps after either are `skip`. Failed runs keep a screenshot of
the page and a Playwright trace under the execution's artifacts folder.

Every await that depends on the page is raced against the execution's
deadline and its cancel event, so a page that never answers cannot hold a slot:
the run closes its context and returns at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page
from playwright.async_api import Error as PlaywrightError

from testqueue import artifacts
from testqueue.config import Settings
from testqueue.runners import chromium, steps
from testqueue.runners.base import Reporter, RunSpec
from testqueue.vocabulary import ArtifactRecord, Outcome, Result, StepRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

TRACE_NAME = "trace.zip"
CLOSE_TIMEOUT_S = 2.0
ABANDON_WAIT_S = 0.2
SCREENSHOT_TIMEOUT_MS = 5_000
MAX_MESSAGE_CHARS = 1_000
MAX_LOG_LINE_CHARS = 2_000


class _Stopped(Exception):
    """The deadline passed or the execution was cancelled while something was awaited."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "timed out" | "cancelled"
        super().__init__(reason)


class _BrowserLost(Exception):
    """The shared Chromium died before this run could open its context."""


class _Guard:
    """Races each await of one run against its deadline (loop time) and its cancel event."""

    def __init__(self, deadline: float, cancel: asyncio.Event) -> None:
        self._deadline = deadline
        self._cancel = cancel
        self._cancelled = asyncio.ensure_future(cancel.wait())

    def reason(self) -> str:
        return "cancelled" if self._cancel.is_set() else "timed out"

    async def race(self, awaitable: Awaitable[T]) -> T:
        """The awaitable's result, or `_Stopped` as soon as the run must end."""
        loop = asyncio.get_running_loop()
        if self._cancel.is_set() or loop.time() >= self._deadline:
            raise _Stopped(self.reason())
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(chromium.consume_exception)
        try:
            done, _ = await asyncio.wait(
                {task, self._cancelled},
                timeout=self._deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        # Give it a moment to unwind; the caller closes the context, which ends it anyway.
        await asyncio.wait({task}, timeout=ABANDON_WAIT_S)
        raise _Stopped(self.reason())

    def close(self) -> None:
        self._cancelled.cancel()


class BrowserRunner:
    """Runs browser test cases: one shared Chromium, a fresh context per execution."""

    kind: ClassVar[str] = "browser"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = chromium.ChromiumPool(recycle_after=settings.browser_recycle_after)

    @property
    def launches(self) -> int:
        """How many times this runner has started Chromium."""
        return self._pool.launches

    @property
    def open_browsers(self) -> int:
        """How many Chromium processes this runner holds open right now."""
        return self._pool.open_browsers

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        """Run the steps in a fresh context; never raises for the test's own failure."""
        report = _Lines(report)
        prepared = _prepare(spec, self._settings)
        if isinstance(prepared, str):
            report.log(prepared)
            return Outcome(Result.ERROR, error_message=prepared)
        parsed, executable = prepared
        guard = _Guard(deadline, cancel)
        try:
            return await self._run_guarded(spec, parsed, executable, guard, report)
        finally:
            guard.close()

    async def close(self) -> None:
        """Close every Chromium this runner started."""
        await self._pool.close()

    async def _run_guarded(
        self,
        spec: RunSpec,
        parsed: list[steps.Step],
        executable: str,
        guard: _Guard,
        report: Reporter,
    ) -> Outcome:
        run = _Run(spec, parsed, self._settings, report, guard)
        # A crash is seen only when the browser is next used: then one retry on a new one.
        for _ in range(2):
            try:
                held = await guard.race(self._pool.acquire(executable))
            except _Stopped as stop:
                return run.not_started(stop, "while starting Chromium")
            except PlaywrightError as exc:
                return run.could_not_start(
                    f"could not start Chromium ({executable}): {_clean(exc)}"
                )
            try:
                return await run.execute(held)
            except _BrowserLost:
                log.warning(
                    "chromium lost, starting another", extra={"execution_id": spec.execution_id}
                )
            finally:
                await self._pool.release(held)
        return run.could_not_start("Chromium disconnected twice before the run could start")


def _prepare(spec: RunSpec, settings: Settings) -> tuple[list[steps.Step], str] | str:
    """The parsed steps and the Chromium to run them in, or why the spec cannot run."""
    if spec.browser not in (None, "", "chromium"):
        return f"browser {spec.browser!r} is not available: this worker runs chromium only"
    try:
        parsed = steps.parse_steps(spec.steps)
    except steps.StepError as exc:
        return f"invalid steps: {exc}"
    executable = chromium.find_chromium(settings.chromium_path)
    if executable is None:
        return chromium.missing_chromium_message(settings.chromium_path)
    return parsed, executable


class _Run:
    """One execution in one fresh browser context: open, run the steps, keep evidence, close."""

    def __init__(
        self,
        spec: RunSpec,
        parsed: list[steps.Step],
        settings: Settings,
        report: Reporter,
        guard: _Guard,
    ) -> None:
        self.spec = spec
        self.steps = parsed
        self.report = report
        self.guard = guard
        base_url = spec.base_url or spec.test_data.get("base_url")
        self.base_url: str | None = base_url if isinstance(base_url, str) and base_url else None
        self.folder = artifacts.execution_dir(settings, spec.execution_id)
        self.context: BrowserContext | None = None
        self._page: Page | None = None
        self._shot: str | None = None  # the screenshot of the step running now
        self._number = 0
        self.trace_name = f"execution-{spec.execution_id}-{secrets.token_hex(4)}"

    @property
    def page(self) -> Page:
        if self._page is None:
            raise RuntimeError("the page is not open")
        return self._page

    async def execute(self, held: chromium.Chromium) -> Outcome:
        browser = held.browser
        try:
            try:
                await self.guard.race(self._open(browser))
            except _Stopped as stop:
                return self.not_started(stop, "while opening a browser context")
            except PlaywrightError as exc:
                if not browser.is_connected():
                    raise _BrowserLost from exc
                return self.could_not_start(f"could not open a browser context: {_clean(exc)}")
            outcome = await self._run_steps()
            if outcome.result in (Result.FAIL, Result.ERROR):
                await self._keep_trace()
            return outcome
        finally:
            await self._close()
            # The browser keeps every context's trace files until it closes: drop ours now.
            for path in held.traces_dir.glob(f"{self.trace_name}*"):
                path.unlink(missing_ok=True)

    def could_not_start(self, message: str) -> Outcome:
        """The browser failed before the first step: an error, every step skipped."""
        self._skip_from(0)
        self.report.log(message)
        return Outcome(Result.ERROR, error_message=message)

    def not_started(self, stop: _Stopped, where: str) -> Outcome:
        """The run ended before its first step: every step is skipped."""
        self._skip_from(0)
        message = f"{stop.reason} {where}, before step 1"
        self.report.log(message)
        return _stopped_outcome(stop, message)

    async def _open(self, browser: Browser) -> None:
        self.context = await browser.new_context(base_url=self.base_url)
        await self.context.tracing.start(name=self.trace_name, snapshots=True)
        self._page = await self.context.new_page()
        self._page.on("console", self._on_console)
        self._page.on("pageerror", self._on_page_error)

    async def _run_steps(self) -> Outcome:
        loop = asyncio.get_running_loop()
        for index, step in enumerate(self.steps):
            self._number, self._shot = index + 1, None
            started = loop.time()
            try:
                result, message = await self._perform(step)
            except _Stopped as stop:
                self._record(step, "error", loop.time() - started, stop.reason)
                self._skip_from(index + 1)
                message = f"{stop.reason} at {self._label(step)}"
                self.report.log(message)
                return _stopped_outcome(stop, message)
            elapsed = loop.time() - started
            if result == "pass":
                self._record(step, result, elapsed)
                continue
            await self._failure_screenshot()
            self._record(step, result, elapsed, message)
            self._skip_from(index + 1)
            if result == "fail":
                return Outcome(Result.FAIL, error_message=f"{self._label(step)} failed: {message}")
            return Outcome(
                Result.ERROR, error_message=f"{self._label(step)} could not run: {message}"
            )
        return Outcome(Result.PASS)

    async def _perform(self, step: steps.Step) -> tuple[str, str | None]:
        """Run one step: `fail` when an expectation does not hold, `error` when it cannot run."""
        try:
            await self.guard.race(step.perform(self.page, self))
        except AssertionError as exc:
            return "fail", _clean(exc)
        except (PlaywrightError, steps.StepError) as exc:
            return "error", _clean(exc)
        return "pass", None

    async def take_screenshot(self, name: str, *, full_page: bool) -> None:
        """Save a PNG of the page for a `screenshot` step (part of `steps.StepContext`)."""
        await self._save_screenshot(f"step-{self._number:02d}-{name}.png", full_page=full_page)

    async def _failure_screenshot(self) -> None:
        name = f"step-{self._number:02d}-failure.png"
        try:
            await self.guard.race(self._save_screenshot(name, full_page=False))
        except (_Stopped, PlaywrightError) as exc:
            log.warning("failure screenshot not taken", extra=self._extra(error=str(exc)))

    async def _save_screenshot(self, name: str, *, full_page: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        await self.page.screenshot(path=path, full_page=full_page, timeout=SCREENSHOT_TIMEOUT_MS)
        self._shot = name
        self.report.artifact(
            ArtifactRecord(kind="screenshot", name=name, path=path, content_type="image/png")
        )

    async def _keep_trace(self) -> None:
        if self.context is None:
            return
        path = self.folder / TRACE_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            await self.guard.race(self.context.tracing.stop(path=path))
        except (_Stopped, PlaywrightError) as exc:
            log.warning("trace not saved", extra=self._extra(error=str(exc)))
            return
        self.report.artifact(
            ArtifactRecord(kind="trace", name=TRACE_NAME, path=path, content_type="application/zip")
        )

    async def _close(self) -> None:
        """Close the context: every page, request and trace of this run ends with it."""
        if self.context is None:
            return
        try:
            await asyncio.wait_for(self.context.close(), CLOSE_TIMEOUT_S)
        except (PlaywrightError, TimeoutError) as exc:
            log.warning("browser context close failed", extra=self._extra(error=repr(exc)))

    def _record(
        self, step: steps.Step, result: str, elapsed_s: float, message: str | None = None
    ) -> None:
        duration_ms = round(elapsed_s * 1000, 1)
        self.report.step(
            StepRecord(
                number=self._number,
                action=step.action,
                result=result,
                description=step.description or step.summary(),
                duration_ms=duration_ms,
                error_message=message,
                screenshot=self._shot,
            )
        )
        line = f"step {self._number} {step.summary()}: {result} ({duration_ms:.0f} ms)"
        self.report.log(f"{line}: {message}" if message else line)

    def _skip_from(self, index: int) -> None:
        for number, step in enumerate(self.steps[index:], start=index + 1):
            description = step.description or step.summary()
            self.report.step(
                StepRecord(
                    number=number, action=step.action, result="skip", description=description
                )
            )
            self.report.log(f"step {number} {step.summary()}: skip")

    def _label(self, step: steps.Step) -> str:
        return f"step {self._number} ({step.summary()})"

    def _extra(self, **fields: object) -> dict[str, object]:
        return {"execution_id": self.spec.execution_id, "step": self._number, **fields}

    def _on_console(self, message: ConsoleMessage) -> None:
        self.report.log(f"console {message.type}: {message.text}"[:MAX_LOG_LINE_CHARS])

    def _on_page_error(self, error: PlaywrightError) -> None:
        self.report.log(f"page error: {error}"[:MAX_LOG_LINE_CHARS])


def _stopped_outcome(stop: _Stopped, message: str) -> Outcome:
    if stop.reason == "cancelled":
        return Outcome(None, error_message=message)
    return Outcome(Result.TIMEOUT, error_message=message)


def _clean(exc: BaseException) -> str:
    """Playwright's message without its call log, short enough to show in a table."""
    text = str(exc)
    for marker in ("\nCall log:", "\nBrowser logs:"):
        text = text.split(marker, 1)[0]
    return text.strip()[:MAX_MESSAGE_CHARS] or type(exc).__name__


class _Lines:
    """A reporter whose log gets whole lines: the runner's messages carry no newline."""

    def __init__(self, report: Reporter) -> None:
        self._report = report

    def log(self, text: str) -> None:
        self._report.log(text + "\n")

    def step(self, step: StepRecord) -> None:
        self._report.step(step)

    def artifact(self, artifact: ArtifactRecord) -> None:
        self._report.artifact(artifact)
