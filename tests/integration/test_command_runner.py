"""The command runner on real processes: outcomes, environment, timeout, cancel, output."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import make_settings, spec_for
from testqueue.recorder import RunRecord
from testqueue.runners.base import RunSpec
from testqueue.runners.command import CommandRunner
from testqueue.vocabulary import Outcome, Result
from waiting import allowance, file_appears, pid_alive, until


@pytest.fixture
def runner(tmp_path: Path) -> CommandRunner:
    return CommandRunner(make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, kill_grace=0.3))


async def _run(
    runner: CommandRunner,
    spec: RunSpec,
    timeout: float = 30.0,
    cancel: asyncio.Event | None = None,
) -> tuple[Outcome, RunRecord]:
    record = RunRecord(spec.execution_id, 1_048_576)
    deadline = asyncio.get_running_loop().time() + timeout
    outcome = await runner.run(
        spec, deadline=deadline, cancel=cancel or asyncio.Event(), report=record
    )
    return outcome, record


async def test_exit_zero_passes_and_output_is_captured(
    runner: CommandRunner, tmp_path: Path
) -> None:
    outcome, record = await _run(runner, spec_for(["sh", "-c", "echo out; echo err >&2"]))
    assert outcome.result == Result.PASS
    assert outcome.exit_code == 0
    assert record.text() == "out\nerr\n"


async def test_non_zero_exit_fails_with_the_code(runner: CommandRunner, tmp_path: Path) -> None:
    outcome, _ = await _run(runner, spec_for(["sh", "-c", "exit 3"]))
    assert outcome.result == Result.FAIL
    assert outcome.exit_code == 3
    assert outcome.error_message == "exited with code 3"


async def test_a_command_that_cannot_start_is_an_error(
    runner: CommandRunner, tmp_path: Path
) -> None:
    outcome, _ = await _run(runner, spec_for(["/no/such/program", "x"]))
    assert outcome.result == Result.ERROR
    assert "cannot start '/no/such/program'" in (outcome.error_message or "")


async def test_environment_has_the_context_and_no_secrets(
    runner: CommandRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/prod")
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nor-this")
    spec = spec_for(["sh", "-c", "env; pwd"], execution_id=42, base_url="http://app.test")
    outcome, record = await _run(runner, spec)
    assert outcome.result == Result.PASS
    lines = record.text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["TESTQUEUE_EXECUTION_ID"] == "42"
    assert env["TESTQUEUE_BASE_URL"] == "http://app.test"
    assert "DATABASE_URL" not in env and "SECRET_KEY" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    workdir = Path(lines[-1])
    assert workdir.name.startswith("testqueue-42-")
    assert env["HOME"] == str(workdir)
    assert not workdir.exists(), "the working folder is removed after the run"


IGNORES_TERM = """
trap '' TERM
sh -c 'trap "" TERM; echo $$ > "$1"; while :; do sleep 0.1; done' child "$1.tmp" &
while [ ! -s "$1.tmp" ]; do sleep 0.01; done
mv "$1.tmp" "$1"; echo >> "$1"
while :; do sleep 0.1; done
"""


async def test_timeout_kills_a_tree_that_ignores_term(
    runner: CommandRunner, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    spec = spec_for(["sh", "-c", IGNORES_TERM, "tree", str(pid_file)], timeout_s=1.5)
    begin = time.monotonic()
    outcome, _ = await _run(runner, spec, timeout=1.5)
    elapsed = time.monotonic() - begin
    child = int(pid_file.read_text().split()[0])
    assert outcome.result == Result.TIMEOUT
    assert "timed out after 1.5 s" in (outcome.error_message or "")
    assert elapsed < allowance(1.5 + 0.3 + 1.0)
    assert not pid_alive(child), "the grandchild that ignores TERM was killed too"


async def test_cancel_stops_a_running_command_within_a_second(
    runner: CommandRunner, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    spec = spec_for(["sh", "-c", IGNORES_TERM, "tree", str(pid_file)])
    cancel = asyncio.Event()
    running = asyncio.create_task(_run(runner, spec, cancel=cancel))
    child = int((await file_appears(pid_file)).split()[0])
    within = allowance(1.0)
    begin = time.monotonic()
    cancel.set()
    outcome, _ = await running
    assert time.monotonic() - begin < within
    assert outcome.result is None
    assert outcome.error_message == "cancelled while running"
    assert not pid_alive(child)


async def test_output_is_capped_keeping_head_and_tail(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    runner = CommandRunner(settings)
    script = "for i in $(seq 1 20000); do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done"
    spec = spec_for(["sh", "-c", script])
    record = RunRecord(1, 16_384)
    deadline = asyncio.get_running_loop().time() + 30
    outcome = await runner.run(spec, deadline=deadline, cancel=asyncio.Event(), report=record)
    text = record.text()
    assert outcome.result == Result.PASS
    assert text.startswith("line-1-")
    assert text.endswith("line-20000-" + "x" * 36 + "\n")
    assert "bytes of output cut ...]" in text
    assert len(text.encode()) < 16_384 + 100


async def test_background_leftovers_are_stopped_when_the_command_exits(
    runner: CommandRunner,
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "bg.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started"
    outcome, _ = await _run(runner, spec_for(["sh", "-c", script]))
    assert outcome.result == Result.PASS
    leftover = int(pid_file.read_text())
    await until(lambda: asyncio.sleep(0, pid_alive(leftover)), lambda alive: not alive, 2.0)
