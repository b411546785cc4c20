"""The command runner: an argv, no shell, in a fresh folder and its own process group.

The command starts in a new session, so its whole tree is one process group
that can be stopped together (TERM, a short grace, KILL), including children
that ignore TERM. The leader dies with the worker (PR_SET_PDEATHSIG), and
every process carries `TESTQUEUE_EXECUTION_ID` and `TESTQUEUE_WORKER_ID` in
its environment, so a restarted worker can find and stop what a killed one
left behind (`sweep_orphans`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import json
import logging
import os
import resource
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from testqueue.config import Settings
from testqueue.models import Result
from testqueue.runners.base import Outcome, Reporter, RunSpec

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 65_536
PR_SET_PDEATHSIG = 1
MAX_OPEN_FILES = 4096
# Output still buffered in the pipe when the tree is gone is drained this long at most.
DRAIN_TIMEOUT_S = 1.0
# How long a sweep waits for the processes it killed to be gone.
SWEEP_WAIT_S = 5.0
ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ")

_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


class CommandRunner:
    """Runs `command` test cases: exit 0 is pass, anything else fail."""

    kind: ClassVar[str] = "command"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        if not spec.command:
            return Outcome(Result.ERROR, error_message="the test case has no command argv")
        workdir = Path(
            tempfile.mkdtemp(prefix=f"testqueue-{spec.execution_id}-", dir=self._settings.work_dir)
        )
        try:
            return await self._run_in(workdir, spec, deadline, cancel, report)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run_in(
        self,
        workdir: Path,
        spec: RunSpec,
        deadline: float,
        cancel: asyncio.Event,
        report: Reporter,
    ) -> Outcome:
        assert spec.command is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                cwd=workdir,
                env=run_environment(spec, workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limits(spec.timeout_s),
            )
        except OSError as exc:
            return Outcome(
                Result.ERROR,
                error_message=f"cannot start {spec.command[0]!r}: {exc.strerror or exc}",
            )
        pump = asyncio.create_task(_pump(proc, report))
        try:
            ended = await _wait(proc, deadline, cancel)
            if ended != "exit":
                await _stop_tree(proc, self._settings.kill_grace)
        finally:
            _kill_group(proc.pid)
            await _drain(pump)
            if proc.returncode is None:
                await proc.wait()
        return _outcome(ended, proc.returncode, spec.timeout_s)

    def _limits(self, timeout_s: float) -> object:
        memory_mb = self._settings.command_memory_limit_mb
        cpu_s = int(timeout_s) + 5

        def apply() -> None:
            # Runs in the child between fork and exec: only async-signal-safe work here.
            if _libc is not None:
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = min(MAX_OPEN_FILES, hard) if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, limit), limit))
            if memory_mb:
                size = memory_mb * 1024 * 1024
                resource.setrlimit(resource.RLIMIT_AS, (size, size))

        return apply

    async def close(self) -> None:
        """Nothing is kept between runs."""


def run_environment(spec: RunSpec, workdir: Path) -> dict[str, str]:
    """The command's whole environment: the run's context and none of the server's secrets."""
    env = {name: os.environ[name] for name in ENV_PASSTHROUGH if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(workdir),
        TMPDIR=str(workdir),
        TESTQUEUE_EXECUTION_ID=str(spec.execution_id),
        TESTQUEUE_TEST_CASE_ID=str(spec.test_case_id or ""),
        TESTQUEUE_ATTEMPT=str(spec.attempt),
        TESTQUEUE_WORKER_ID=spec.worker_id,
        TESTQUEUE_BASE_URL=spec.base_url or "",
        TESTQUEUE_ENVIRONMENT=spec.environment or "",
        TESTQUEUE_BROWSER=spec.browser or "",
        TESTQUEUE_TEST_DATA=json.dumps(spec.test_data),
        TESTQUEUE_WORK_DIR=str(workdir),
    )
    return env


async def _pump(proc: asyncio.subprocess.Process, report: Reporter) -> None:
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await proc.stdout.read(READ_CHUNK_BYTES):
        report.log(decoder.decode(chunk))
    if tail := decoder.decode(b"", final=True):
        report.log(tail)


async def _wait(proc: asyncio.subprocess.Process, deadline: float, cancel: asyncio.Event) -> str:
    """'exit', 'timeout' or 'cancel': whichever comes first."""
    exited = _leader_exit(proc.pid)
    cancelled = asyncio.ensure_future(cancel.wait())
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        done, _ = await asyncio.wait(
            {exited, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        cancelled.cancel()
        exited.cancel()
    if exited in done:
        return "exit"
    return "cancel" if cancelled in done else "timeout"


def _leader_exit(pid: int) -> asyncio.Future[None]:
    """Resolves when the process itself exits.

    `Process.wait()` also waits for its pipes to close, which a background
    child holding stdout would put off forever; a pidfd says when the leader
    alone is gone.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # exited and reaped already
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


async def _stop_tree(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """TERM the whole group, give it `grace_s`, then KILL whatever is left."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout=grace_s)
    _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _drain(pump: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(pump, timeout=DRAIN_TIMEOUT_S)
    except TimeoutError:
        log.warning("output still open after the process tree was stopped")


def _outcome(ended: str, returncode: int | None, timeout_s: float) -> Outcome:
    if ended == "timeout":
        return Outcome(
            Result.TIMEOUT,
            exit_code=returncode,
            error_message=f"timed out after {timeout_s:g} s; the process tree was stopped",
        )
    if ended == "cancel":
        return Outcome(None, exit_code=returncode, error_message="cancelled while running")
    if returncode == 0:
        return Outcome(Result.PASS, exit_code=0)
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        return Outcome(Result.FAIL, exit_code=returncode, error_message=f"killed by {name}")
    return Outcome(
        Result.FAIL, exit_code=returncode, error_message=f"exited with code {returncode}"
    )


def sweep_orphans(worker_ids: set[str]) -> int:
    """Kill every process on this host that a gone worker in `worker_ids` started.

    Found by the `TESTQUEUE_WORKER_ID` each command inherits, so it reaches
    processes that left the group too. Returns once they are all gone, so a
    recovered run never starts beside its old copy. Linux only (/proc).
    """
    if not worker_ids:
        return 0
    markers = {f"TESTQUEUE_WORKER_ID={wid}".encode() for wid in worker_ids}
    killed = [pid for pid in _live_pids() if markers & _environ(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + SWEEP_WAIT_S
    while any(_running(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(killed)


def _live_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _environ(pid: int) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def _running(pid: int) -> bool:
    """True until the process is gone or a zombie (killed, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
