"""The console: `testqueue user ...`, logs a person can read, and what a stop waits for."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import ADMIN_PASSWORD
from process import Process, Server, held_argv, marks, wait_for
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.services.accounts import Accounts

CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in {"DATABASE_URL", "LOG_FORMAT", "SECRET_KEY", "TESTQUEUE_ADMIN_PASSWORD"}
}


def run_cli(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testqueue", *args],
        cwd=folder,
        env={**CLEAN_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_commands_refuse_to_make_a_database_nobody_asked_for(tmp_path: Path) -> None:
    refused = run_cli(tmp_path, "user", "create", "ana", "--password", "ana-password")
    assert refused.returncode == 2
    assert f"there is no database at {tmp_path / 'testqueue.db'}" in refused.stderr
    assert "--create" in refused.stderr
    assert list(tmp_path.iterdir()) == []

    made = run_cli(tmp_path, "user", "--create", "create", "ana", "--password", "ana-password")
    assert made.returncode == 0, made.stderr
    assert f"using sqlite:///{tmp_path / 'testqueue.db'}" in made.stderr
    assert "created member 'ana'" in made.stdout


def test_user_list_set_password_disable_and_enable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    created = run_cli(
        tmp_path, "user", "create", "bo", "--role", "admin", "--password", "bo-password-1",
        DATABASE_URL=url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_cli(tmp_path, "user", "create", "cy", "--password", "cy-password-1", DATABASE_URL=url)

    changed = run_cli(
        tmp_path, "user", "set-password", "cy", "--password", "cy-password-2", DATABASE_URL=url
    )
    assert changed.returncode == 0 and "sessions ended" in changed.stdout
    assert asyncio.run(_signs_in(url, "cy", "cy-password-2"))
    assert not asyncio.run(_signs_in(url, "cy", "cy-password-1"))

    assert run_cli(tmp_path, "user", "disable", "cy", DATABASE_URL=url).returncode == 0
    listed = run_cli(tmp_path, "user", "list", DATABASE_URL=url).stdout.splitlines()
    rows = {line.split()[1]: line.split()[2:4] for line in listed[1:]}
    assert rows == {"bo": ["admin", "active"], "cy": ["member", "disabled"]}
    assert not asyncio.run(_signs_in(url, "cy", "cy-password-2"))
    assert run_cli(tmp_path, "user", "enable", "cy", DATABASE_URL=url).returncode == 0
    assert asyncio.run(_signs_in(url, "cy", "cy-password-2"))

    last_admin = run_cli(tmp_path, "user", "disable", "bo", DATABASE_URL=url)
    assert last_admin.returncode == 1 and "the last active admin" in last_admin.stderr
    unknown = run_cli(tmp_path, "user", "disable", "nobody", DATABASE_URL=url)
    assert unknown.returncode == 1 and "there is no account named 'nobody'" in unknown.stderr


async def _signs_in(url: str, username: str, password: str) -> bool:
    settings = Settings(_env_file=None, database_url=url)
    db = Database(settings)
    accounts = Accounts(settings, db)
    try:
        await accounts.start()
        await accounts.sign_in(username, password, "console-test")
        return True
    except Exception:
        return False
    finally:
        accounts.close()
        await db.dispose()


def test_logs_are_json_off_a_terminal_and_migrations_quiet_when_up_to_date(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    first = run_cli(tmp_path, "migrate", DATABASE_URL=url)
    assert first.returncode == 0
    lines = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    assert [entry["message"] for entry in lines if entry["logger"] == "testqueue.database"] == [
        "database migrated"
    ]
    again = run_cli(tmp_path, "migrate", DATABASE_URL=url)
    assert again.returncode == 0
    assert again.stderr == "", "nothing to do, nothing said"


def test_logs_on_a_terminal_are_plain_lines(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "testqueue", "migrate"],
            cwd=tmp_path,
            env={**CLEAN_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"},
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            timeout=60,
            check=True,
        )
        os.close(terminal)
        said = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(main)
    text = said.decode()
    assert " info  testqueue.database: database migrated from=empty to=" in text
    assert "{" not in text.splitlines()[-1]


def test_serve_logs_json_without_terminal_colours(tmp_path: Path) -> None:
    server = Server(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", log_format="json").start()
    try:
        server.call("GET", "/executions/queue/status")
    finally:
        server.terminate()
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    assert lines, server.log()
    for line in lines:
        entry = json.loads(line)
        assert "\x1b" not in line and "color_message" not in entry


def test_a_stopping_worker_says_what_it_waits_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    server = Server(tmp_path, url, "--no-worker").start()
    worker = Process(tmp_path, url, "worker", shutdown_grace=1).start()
    try:
        test_id = server.call(
            "POST", "/tests", json={"title": "held", "command": held_argv(tmp_path)}
        )["id"]
        ids = [server.call("POST", f"/executions/tests/{test_id}/run")["id"] for _ in range(2)]
        wait_for(lambda: [len(marks(tmp_path, i)) for i in ids], lambda n: n == [2, 2])
        assert worker.terminate() == 0
    finally:
        worker.stop()
        server.stop()
    assert f"waiting up to 1 s for 2 running executions: #{ids[0]}, #{ids[1]}" in worker.log()


def test_the_admin_password_is_not_logged(tmp_path: Path) -> None:
    server = Server(tmp_path, f"sqlite:///{tmp_path / 'q.db'}").start()
    server.terminate()
    assert ADMIN_PASSWORD not in server.log()
