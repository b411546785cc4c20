"""Waiting for a condition with a deadline: for state another process changes."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.02


async def until(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """Call `probe` until `accept` takes its value; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(POLL_S)


async def file_appears(path: Path, timeout: float = 15.0) -> str:
    async def read() -> str | None:
        return path.read_text() if path.exists() else None

    text = await until(read, lambda v: v is not None and v.endswith("\n"), timeout)
    assert text is not None
    return text


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_start_s(samples: int = 5) -> float:
    """This machine's pace right now: the median seconds to start and reap `true`.

    About a millisecond or two on an idle machine; many times that beside other
    work. Time bounds in tests grow with it (`allowance`), so a bound that
    proves "promptly" on an idle laptop holds on a busy CI host too.
    """
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def allowance(nominal_s: float) -> float:
    """`nominal_s`, plus what the machine's present pace adds (50 process starts' worth)."""
    return nominal_s + 50 * process_start_s()
