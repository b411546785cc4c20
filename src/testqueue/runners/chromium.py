"""The Chromium that browser runs share: found on disk, launched once, recycled.

Starting Chromium costs about a second; a fresh context in a running one costs
tens of milliseconds. So one process keeps one browser warm and hands it to
every browser run, and replaces it after `BROWSER_RECYCLE_AFTER` runs or as
soon as it is found disconnected (crashed or killed). Recycling bounds what a
long-lived Chromium accumulates: browser-process memory and the trace
resources (page snapshots' CSS and images) Playwright keeps until the browser
closes. A retired browser stays open until the runs still on it end, so at
most two are alive at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

log = logging.getLogger(__name__)

# No outside network here: the background-networking flags keep Chromium from
# flooding the log with refused connections to update and sync services.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# The headless shell first: a new context costs it about a third of what full Chromium needs.
CHROMIUM_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
SYSTEM_BIN = Path("/usr/bin")
INSTALL_HINT = (
    "install one with `apt-get install chromium-headless-shell` (or `apt-get install chromium`)"
    " or set CHROMIUM_PATH to a Chromium executable"
)


def find_chromium(chromium_path: str | None) -> str | None:
    """The Chromium to launch: CHROMIUM_PATH if set (and only it), else the usual places."""
    if chromium_path:
        path = Path(chromium_path)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        candidate = SYSTEM_BIN / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_chromium_message(chromium_path: str | None) -> str:
    """Why no browser could be found, and how to get one."""
    if chromium_path:
        return f"CHROMIUM_PATH={chromium_path} is not an executable file; {INSTALL_HINT}"
    return f"no Chromium found ({', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}"


def consume_exception(task: asyncio.Future[Any]) -> None:
    """Mark a task's exception as seen when nobody may be left to await it."""
    if not task.cancelled():
        task.exception()


@dataclass(eq=False)
class Chromium:
    """One launched Chromium, its Playwright driver, and the runs it has served."""

    playwright: Playwright
    browser: Browser
    traces_dir: Path
    runs: int = 0
    active: int = 0
    retired: bool = False
    closed: bool = False

    def usable(self, recycle_after: int) -> bool:
        return not self.retired and self.runs < recycle_after and self.browser.is_connected()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.browser.close()
        except PlaywrightError as exc:
            log.warning("chromium close failed", extra={"error": str(exc)})
        finally:
            await self.playwright.stop()
            shutil.rmtree(self.traces_dir, ignore_errors=True)
        log.info("chromium closed", extra={"runs": self.runs})


class ChromiumPool:
    """Hands out the shared Chromium; launches it lazily and recycles it."""

    def __init__(self, *, recycle_after: int) -> None:
        self.recycle_after = recycle_after
        self.launches = 0
        self._current: Chromium | None = None
        self._open: set[Chromium] = set()
        # Concurrent first runs all await this one task instead of each launching a browser.
        self._launch: asyncio.Task[Chromium] | None = None

    @property
    def open_browsers(self) -> int:
        return len(self._open)

    async def acquire(self, executable: str) -> Chromium:
        """The shared browser for one more run; `release` it when the run ends."""
        while True:
            current = self._current
            if current is not None and current.usable(self.recycle_after):
                current.runs += 1
                current.active += 1
                return current
            if current is not None:
                await self._retire(current)
            if self._launch is None or self._launch.done():
                self._launch = asyncio.create_task(self._start(executable))
                self._launch.add_done_callback(consume_exception)
            # Shielded: a run that stops waiting must not cancel the launch for the others.
            await asyncio.shield(self._launch)

    async def release(self, chromium: Chromium) -> None:
        chromium.active -= 1
        if not chromium.usable(self.recycle_after):
            await self._retire(chromium)

    async def close(self) -> None:
        """Close every browser, and a launch still under way."""
        launch, self._launch = self._launch, None
        if launch is not None and not launch.done():
            launch.cancel()
            await asyncio.wait({launch})
        self._current = None
        for chromium in list(self._open):
            await self._close(chromium)

    async def _retire(self, chromium: Chromium) -> None:
        """No new runs on this browser; close it once the runs still on it end."""
        chromium.retired = True
        if self._current is chromium:
            self._current = None
        if chromium.active == 0:
            await self._close(chromium)

    async def _close(self, chromium: Chromium) -> None:
        self._open.discard(chromium)
        await chromium.close()

    async def _start(self, executable: str) -> Chromium:
        playwright = await async_playwright().start()
        # Ours, not Playwright's temp folder, so closing the browser can remove every trace.
        traces_dir = Path(tempfile.mkdtemp(prefix="testqueue-traces-"))
        try:
            # Signals are the dispatcher's: a graceful shutdown lets the runs finish.
            browser = await playwright.chromium.launch(
                executable_path=executable,
                args=list(CHROMIUM_ARGS),
                traces_dir=traces_dir,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        except BaseException:
            await playwright.stop()
            shutil.rmtree(traces_dir, ignore_errors=True)
            raise
        started = Chromium(playwright, browser, traces_dir)
        self._open.add(started)
        self._current = started
        self.launches += 1
        log.info("chromium started", extra={"executable": executable, "version": browser.version})
        return started
