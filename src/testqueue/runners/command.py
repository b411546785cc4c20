"""The command runner: an argv, no shell, in a fresh folder and its own process group.

The command starts in a new session, so its whole tree is one process group
that can be stopped together (TERM, a short grace, KILL), including children
that ignore TERM. It starts through util-linux's `setpriv` (the leader dies
with the worker: PR_SET_PDEATHSIG) and `prlimit` (no core dumps, a CPU-time
and an open-files limit, optionally an address-space limit), and
every process carries `TESTQUEUE_EXECUTION_ID` and `TESTQUEUE_WORKER_ID` in
its environment, so a restarted worker can find and stop what a killed one
left behind (`processes.sweep_orphans`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import ClassVar

from testqueue.config import Settings
from testqueue.runners.base import Reporter, RunSpec
from testqueue.runners.processes import Tree
from testqueue.vocabulary import Outcome, Result

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 4096
ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ")


class CommandRunner:
    """Runs `command` test cases: exit 0 is pass, anything else fail."""

    kind: ClassVar[str] = "command"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._wrappers = _find_wrappers()

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        if not spec.command:
            return Outcome(Result.ERROR, error_message="the test case has no command argv")
        parent = self._settings.work_dir
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"testqueue-{spec.execution_id}-", dir=parent))
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
        env = run_environment(spec, workdir)
        program = _resolve(spec.command[0], env["PATH"], workdir)
        if program is None:
            return Outcome(
                Result.ERROR,
                error_message=f"cannot start {spec.command[0]!r}: no such program on PATH",
            )
        argv = [*self._confine(spec.timeout_s), program, *spec.command[1:]]
        try:
            tree = await Tree.start(argv, cwd=workdir, env=env, sink=report.log)
        except OSError as exc:
            return Outcome(
                Result.ERROR,
                error_message=f"cannot start {spec.command[0]!r}: {exc.strerror or exc}",
            )
        try:
            ended = await tree.wait(deadline, cancel)
            if ended != "exit":
                await tree.stop(self._settings.kill_grace)
        finally:
            await tree.finish()
        return _outcome(ended, tree.returncode, spec.timeout_s)

    def _confine(self, timeout_s: float) -> list[str]:
        """The wrappers that set the death signal and the limits, then exec the command.

        Done by exec rather than a `preexec_fn`: forking a large Python process
        to run Python in the child costs tens of milliseconds, two small execs
        a few. Without util-linux the command runs unconfined (logged once).
        """
        if self._wrappers is None:
            return []
        cpu_s = int(timeout_s) + 5
        limits = ["--core=0", f"--cpu={cpu_s}:{cpu_s + 5}", f"--nofile={MAX_OPEN_FILES}"]
        if self._settings.command_memory_limit_mb:
            limits.append(f"--as={self._settings.command_memory_limit_mb * 1024 * 1024}")
        setpriv, prlimit = self._wrappers
        return [setpriv, "--pdeathsig", "KILL", "--", prlimit, *limits, "--"]

    async def close(self) -> None:
        """Nothing is kept between runs."""


def _find_wrappers() -> tuple[str, str] | None:
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    if setpriv and prlimit:
        return setpriv, prlimit
    log.warning("setpriv or prlimit missing: commands run without death signal and limits")
    return None


def _resolve(program: str, path: str, workdir: Path) -> str | None:
    """The executable `program` names, looked up as exec would, or None."""
    if "/" in program:
        candidate = Path(program) if Path(program).is_absolute() else workdir / program
        return str(candidate) if os.access(candidate, os.X_OK) and candidate.is_file() else None
    return shutil.which(program, path=path)


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
