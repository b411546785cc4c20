"""The CI client end to end: `testqueue run --wait --junit` against a real server process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ADMIN_PASSWORD
from junit import read_report
from process import Server, held_argv, kill_held, marks, wait_for

# Fails the first time it runs for an execution, passes after: a flaky test.
FLAKY = 'm="$1/flaky-$TESTQUEUE_EXECUTION_ID"; [ -e "$m" ] && exit 0; touch "$m"; exit 1'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client")
    instance = Server(folder, f"sqlite:///{folder / 'q.db'}", max_concurrent_executions=3)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def env(server: Server) -> dict[str, str]:
    token = server.call("POST", "/users/me/tokens", json={"name": "ci"})["token"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TESTQUEUE_")}
    return {**base, "TESTQUEUE_URL": server.base_url, "TESTQUEUE_TOKEN": token}


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testqueue", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _case(server: Server, title: str, argv: list[str], **fields: Any) -> int:
    return int(
        server.call("POST", "/tests", json={"title": title, "command": argv, **fields})["id"]
    )


def test_a_passing_suite_exits_0_and_writes_junit_that_validates(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    ids = [_case(server, f"green {n}", ["true"], tags=["green"]) for n in range(3)]
    server.call("POST", "/suites", json={"name": "green", "tags": ["green"]})
    report = tmp_path / "report.xml"
    done = cli(env, "run", "--suite", "green", "--wait", "--junit", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "batch" in done.stdout and ": pass" in done.stdout
    for execution_line in done.stdout.splitlines()[1:4]:
        assert execution_line.endswith(("pass in", "s")) or "pass" in execution_line
    suite = read_report(report.read_text())["testsuite"][0]
    assert (suite["@name"], suite["@tests"], suite["@failures"]) == ("green", 3, 0)
    assert len(ids) == 3


def test_a_failing_run_exits_1_and_links_what_failed(server: Server, env: dict[str, str]) -> None:
    good = _case(server, "fine", ["true"])
    bad = _case(server, "broken", ["sh", "-c", "echo nope; exit 3"])
    done = cli(env, "run", str(good), str(bad), "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert ": fail" in done.stdout
    assert f"{server.base_url}/executions/" in done.stdout
    assert "broken: fail" in done.stdout


def test_a_run_that_cannot_start_exits_4(server: Server, env: dict[str, str]) -> None:
    missing = _case(server, "missing program", ["/no/such/program"])
    done = cli(env, "run", str(missing), "--wait")
    assert done.returncode == 4, done.stdout + done.stderr
    assert ": error" in done.stdout


def test_a_flaky_test_passes_on_its_retry_and_says_so(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    flaky = _case(server, "flaky", ["sh", "-c", FLAKY, "flaky", str(tmp_path)], retries=1)
    done = cli(env, "run", str(flaky), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed (1 flaky)" in done.stdout
    assert "flaky: pass (flaky)" in done.stdout


def test_a_cancelled_batch_exits_3(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    held = _case(server, "held", held_argv(tmp_path))
    waiting = subprocess.Popen(
        [sys.executable, "-m", "testqueue", "run", str(held), str(held), "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        batch = wait_for(
            lambda: server.call("GET", "/batches?limit=1")["items"][0],
            lambda b: b["counts"]["running"] == 2,
        )
        wait_for(
            lambda: [len(marks(tmp_path, e)) for e in _ids(server, batch)], lambda n: n == [2, 2]
        )
        cancelled = cli(env, "cancel", str(batch["id"]))
        assert cancelled.returncode == 0, cancelled.stderr
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        (tmp_path / "gate").touch()
    assert waiting.returncode == 3, out + err
    assert ": cancelled" in out


def _ids(server: Server, batch: dict[str, Any]) -> list[int]:
    return [e["id"] for e in server.call("GET", f"/batches/{batch['id']}")["executions"]]


def test_a_server_that_goes_away_mid_wait_exits_2_with_a_clear_message(
    env: dict[str, str], tmp_path: Path
) -> None:
    lone = Server(tmp_path, f"sqlite:///{tmp_path / 'gone.db'}").start()
    try:
        token = lone.call("POST", "/users/me/tokens", json={"name": "ci"})["token"]
        held = int(
            lone.call("POST", "/tests", json={"title": "held", "command": held_argv(tmp_path)})[
                "id"
            ]
        )
        waiting = subprocess.Popen(
            [sys.executable, "-m", "testqueue", "run", str(held), "--wait"],
            env={**env, "TESTQUEUE_URL": lone.base_url, "TESTQUEUE_TOKEN": token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: lone.call("GET", "/executions/queue/status")["active_count"], lambda n: n == 1
        )
        lone.kill9()
        out, err = waiting.communicate(timeout=120)
    finally:
        lone.stop()
        (tmp_path / "gate").touch()
        kill_held(tmp_path)
    assert waiting.returncode == 2, out + err
    assert f"lost the connection to {lone.base_url}" in err or "cannot reach" in err
    assert "Traceback" not in err


def test_login_keeps_a_token_only_its_user_can_read(server: Server, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTQUEUE_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    done = cli(
        env,
        "login",
        "--server",
        server.base_url,
        "--username",
        "admin",
        "--password",
        ADMIN_PASSWORD,
    )
    assert done.returncode == 0, done.stderr
    stored = tmp_path / "config" / "testqueue" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert cli(env, "status").returncode == 0, "the stored login is used with no flags"
    wrong = cli(env, "status", "--token", "tq_not-a-token")
    assert wrong.returncode == 2 and "not valid" in wrong.stderr


def test_usage_problems_exit_2_and_say_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    bare = {k: v for k, v in env.items() if not k.startswith("TESTQUEUE_")}
    bare["XDG_CONFIG_HOME"] = str(tmp_path)
    nothing = cli(bare, "run", "1")
    assert nothing.returncode == 2 and "no server" in nothing.stderr
    empty = cli(env, "run")
    assert empty.returncode == 2 and "name what to run" in empty.stderr
    unknown = cli(env, "run", "--suite", "no-such-suite")
    assert unknown.returncode == 2 and "no suite named 'no-such-suite'" in unknown.stderr
