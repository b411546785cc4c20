"""A served instance for the dashboard tests, and a JSON API client for it.

The server is `process.Server`: a subprocess on a free port with its own SQLite
file and folders, exactly as an operator starts it; tests talk to it over HTTP
and stop it with SIGTERM. Runs that must hold a slot use `gated_argv`: a command
that waits until the test creates a file, so no test needs to sleep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conftest import ADMIN_PASSWORD
from process import Server
from waiting import until

__all__ = ["ADMIN_PASSWORD", "Api", "Server", "gated_argv", "start"]


def start(folder: Path, **env: str) -> Server:
    """`testqueue serve` on a free port with its own SQLite file in `folder`, healthy."""
    folder.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{folder / 'testqueue.db'}"
    settings = {"max_concurrent_executions": 5, "shutdown_grace": 1, **env}
    return Server(folder, database_url, **settings).start()


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

    async def wait_idle(self) -> None:
        async def idle() -> bool:
            status = await self.status()
            return bool(status["active_count"] == 0 and status["queued_count"] == 0)

        await until(idle, bool)
