"""A real `testqueue serve` process for acceptance tests, and a JSON API client for it.

The server runs as a subprocess on a free port with its own SQLite file and
folders, exactly as an operator starts it; tests talk to it over HTTP and
stop it with SIGTERM. Runs that must hold a slot use `gated_argv`: a command
that waits until the test creates a file, so no test needs to sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "admin-password-1"
SECRET_KEY = "acceptance-secret-key-0123456789abcdef0123456789"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """One running `testqueue serve` process."""

    base_url: str
    folder: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: Any = field(repr=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails if it hangs)."""
        if self._log_file.closed:
            return int(self.process.returncode)
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"the server did not stop within {timeout_s} s:\n{self.log_text()[-4000:]}"
                ) from None
        finally:
            self._log_file.close()


def start(folder: Path, **env: str) -> Served:
    """Start `testqueue serve` on a free port and wait until /api/v1/health answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "work").mkdir(exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder / 'testqueue.db'}",
        "TESTQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MAX_CONCURRENT_EXECUTIONS": "5",
        "SECRET_KEY": SECRET_KEY,
        "WORK_DIR": str(folder / "work"),
        "ARTIFACTS_DIR": str(folder / "artifacts"),
        "SHUTDOWN_GRACE": "1",
        "HEARTBEAT_INTERVAL": "0.2",
        "LOG_FORMAT": "text",
        **env,
    }
    log_path = folder / "server.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "testqueue", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=environment,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}", folder, process, log_path, log_file)
    _wait_healthy(served)
    return served


def _wait_healthy(served: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=served.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                break
            try:
                if client.get("/api/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
    served.stop(timeout_s=5)
    raise AssertionError(f"the server did not come up:\n{served.log_text()[-4000:]}")


def gated_argv(gates: Path) -> list[str]:
    """A command that runs until `gates/all` or `gates/<its execution id>` exists."""
    script = (
        'echo "started $TESTQUEUE_EXECUTION_ID"; '
        'while [ ! -e "$0/all" ] && [ ! -e "$0/$TESTQUEUE_EXECUTION_ID" ]; do sleep 0.1; done; '
        'echo "finished $TESTQUEUE_EXECUTION_ID"'
    )
    return ["sh", "-c", script, str(gates)]


class Api:
    """The JSON API of a served instance, signed in as admin."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.admin: dict[str, str] = {}

    async def sign_in(self, username: str, password: str) -> dict[str, str]:
        response = await self.client.post(
            "/api/v1/auth/login", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def create_member(self, username: str, password: str) -> None:
        response = await self.client.post(
            "/api/v1/users",
            json={"username": username, "password": password, "role": "member"},
            headers=self.admin,
        )
        assert response.status_code == 201, response.text

    async def create_test(self, title: str, argv: list[str], **fields: Any) -> int:
        body = {"title": title, "runner": "command", "command": argv, **fields}
        response = await self.client.post("/api/v1/tests", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def run(self, test_case_id: int, **body: Any) -> int:
        response = await self.client.post(
            f"/api/v1/executions/tests/{test_case_id}/run", json=body or None, headers=self.admin
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def status(self) -> dict[str, Any]:
        response = await self.client.get("/api/v1/executions/queue/status", headers=self.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def execution(self, execution_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/executions/{execution_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_until(self, check: Any, what: str, timeout_s: float = 15.0) -> Any:
        """Poll `check()` (async) until it returns something truthy, or fail naming `what`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            value = await check()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(POLL_S)

    async def wait_idle(self) -> None:
        async def idle() -> bool:
            status = await self.status()
            return bool(status["active_count"] == 0 and status["queued_count"] == 0)

        await self.wait_until(idle, "an idle queue")
