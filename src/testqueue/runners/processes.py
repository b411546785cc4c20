"""Process trees on asyncio: start, follow output, wait, stop, sweep what was left.

Processes start with `subprocess.Popen` (vfork: a millisecond or two even
from a large server) rather than the event loop's own subprocess support,
which forks (uvloop) or spends a thread per child (asyncio on 3.11). A pidfd
says when the leader exits; its output is read through the loop's pipe
transport. Linux only, like everything that uses /proc here.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Output still buffered in the pipe when the tree is gone is drained this long at most.
DRAIN_TIMEOUT_S = 1.0
# How long a sweep waits for the processes it killed to be gone.
SWEEP_WAIT_S = 5.0


class _Output(asyncio.Protocol):
    """Decodes a pipe as UTF-8 and hands the text on; `closed` resolves at EOF."""

    def __init__(self, sink: Callable[[str], None], closed: asyncio.Future[None]) -> None:
        self._sink = sink
        self._closed = closed
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def data_received(self, data: bytes) -> None:
        if text := self._decoder.decode(data):
            self._sink(text)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if tail := self._decoder.decode(b"", final=True):
            self._sink(tail)
        if not self._closed.done():
            self._closed.set_result(None)


class Tree:
    """A started command: its own session, so the whole tree is one process group."""

    def __init__(self, popen: subprocess.Popen[bytes], output_closed: asyncio.Future[None]) -> None:
        self.popen = popen
        self._output_closed = output_closed
        self._exited = leader_exit(popen.pid)  # one pidfd for the tree's whole life

    @classmethod
    async def start(
        cls, argv: list[str], *, cwd: Path, env: dict[str, str], sink: Callable[[str], None]
    ) -> Tree:
        """Start `argv` with stdout and stderr together going to `sink`; OSError if it cannot."""
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        assert popen.stdout is not None
        await loop.connect_read_pipe(lambda: _Output(sink, closed), popen.stdout)
        return cls(popen, closed)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self, deadline: float, cancel: asyncio.Event) -> str:
        """'exit', 'timeout' or 'cancel': whichever comes first."""
        cancelled: asyncio.Future[bool] = asyncio.ensure_future(cancel.wait())
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            waits: set[asyncio.Future[Any]] = {self._exited, cancelled}
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
        if self._exited in done:
            return "exit"
        return "cancel" if cancelled in done else "timeout"

    async def stop(self, grace_s: float) -> None:
        """TERM the whole group, give the leader `grace_s` to exit, then KILL the group."""
        signal_group(self.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await asyncio.shield(self._exited)
        signal_group(self.pid, signal.SIGKILL)

    async def finish(self) -> None:
        """Kill what is left of the group, read the last output, reap the leader."""
        signal_group(self.pid, signal.SIGKILL)
        # `timeout`, not `wait_for` (a task of its own): the outcome is turns of a busy loop
        # sooner, and with it the finish's journal record.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await asyncio.shield(self._output_closed)
        await self._exited
        self.popen.wait()


def leader_exit(pid: int) -> asyncio.Future[None]:
    """Resolves when the process exits (it stays a zombie until reaped, so no pid reuse)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        done.set_result(None)
        return done

    def on_exit() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_exit)

    def close(_: asyncio.Future[None]) -> None:
        loop.remove_reader(fd)
        os.close(fd)

    done.add_done_callback(close)
    return done


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def sweep_orphans(worker_ids: set[str]) -> int:
    """Kill every process on this host that a gone worker in `worker_ids` started.

    Found by the `TESTQUEUE_WORKER_ID` each command inherits, so it reaches
    processes that left the group too. Returns once they are all gone, so a
    recovered run never starts beside its old copy.
    """
    if not worker_ids:
        return 0
    markers = {f"TESTQUEUE_WORKER_ID={wid}".encode() for wid in worker_ids}
    handles = (_handle(pid, markers) for pid in _pids() if markers & _environ(pid))
    found = [fd for fd in handles if fd is not None]
    try:
        for fd in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        # A pidfd turns readable when its process has exited.
        deadline = time.monotonic() + SWEEP_WAIT_S
        waiting = list(found)
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(waiting, [], [], left)
            waiting = [fd for fd in waiting if fd not in ready]
    finally:
        for fd in found:
            os.close(fd)
    return len(found)


def _handle(pid: int, markers: set[bytes]) -> int | None:
    """A pidfd for `pid` if it is still the process the markers named (pids get reused)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if markers & _environ(pid):
        return fd
    os.close(fd)
    return None


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _environ(pid: int) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()
