"""Real `testqueue` processes for acceptance tests: start, wait until healthy, stop, kill."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import ADMIN_PASSWORD

START_TIMEOUT_S = 30.0


# Each run notes its pid and its child's in marks/<id>, writes marks/TWICE if an
# earlier copy of itself still runs beside it, then holds its slot until the
# test creates the file `gate`.
HELD = r"""
marks="$1/marks"; id="$TESTQUEUE_EXECUTION_ID"
if [ -s "$marks/$id" ]; then
  for p in $(cat "$marks/$id"); do
    state=$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && echo "$id $p $state" >> "$marks/TWICE"
  done
fi
(while :; do sleep 0.1; done) &
echo "$$ $!" >> "$marks/$id"
while [ ! -e "$1/gate" ]; do sleep 0.02; done
"""


def held_argv(folder: Path) -> list[str]:
    """The argv of a run that holds its slot until `folder/gate` exists (see HELD)."""
    (folder / "marks").mkdir(exist_ok=True)
    return ["sh", "-c", HELD, "held", str(folder)]


def marks(folder: Path, execution_id: int) -> list[int]:
    """The pids every attempt of a held run noted so far."""
    path = folder / "marks" / str(execution_id)
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def kill_held(folder: Path) -> None:
    """Kill the process groups of every held run noted under `folder`: what a server
    killed with -9 leaves behind when no worker comes back to sweep it."""
    for path in (folder / "marks").glob("[0-9]*"):
        for pid in (int(p) for p in path.read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One `python -m testqueue ...` child with its own environment and log file."""

    def __init__(self, folder: Path, database_url: str, *args: str, **env: Any) -> None:
        self.folder = folder
        self.args = args
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "TESTQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SECRET_KEY": "acceptance-secret-key-0123456789-abcdefghij",
            "WORK_DIR": str(folder),
            "ARTIFACTS_DIR": str(folder / "artifacts"),
            "HEARTBEAT_INTERVAL": "0.2",
            "LOG_FORMAT": "text",
            **{key.upper(): str(value) for key, value in env.items()},
        }
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path = folder / f"{args[0]}-{time.monotonic_ns()}.log"

    def start(self) -> Process:
        self.log_path = self.folder / f"{self.args[0]}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "testqueue", *self.args],
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; uvicorn re-raises the signal after its graceful shutdown."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


class Server(Process):
    """`testqueue serve` on a free port, with a signed-in admin client."""

    def __init__(self, folder: Path, database_url: str, *extra: str, **env: Any) -> None:
        self.port = free_port()
        super().__init__(folder, database_url, "serve", "--port", str(self.port), *extra, **env)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = {}

    def start(self) -> Server:
        super().start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not answer in {START_TIMEOUT_S} s:\n{self.log()}")
            time.sleep(0.05)
        token = httpx.post(
            f"{self.base_url}/api/v1/auth/login",
            data={"username": "admin", "password": ADMIN_PASSWORD},
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        return self

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method, f"{self.base_url}/api/v1{path}", headers=self.headers, timeout=10, **kwargs
        )
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None


def wait_for(probe: Any, accept: Any, timeout: float = 20.0) -> Any:
    """Poll `probe()` until `accept` takes its value (state changed by another process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s; last value: {value!r}")
        time.sleep(0.02)


def wait_for_progress(probe: Any, target: int, stall_s: float = 30.0) -> None:
    """Until `probe()` reaches `target`, failing only when it stops moving for `stall_s`.

    A busy machine makes work slower, not stuck: the bound is on the lack of
    progress, not on the total time.
    """
    last, moved_at = probe(), time.monotonic()
    while last < target:
        time.sleep(0.2)
        now = probe()
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > stall_s:
            raise AssertionError(f"stuck at {last} of {target} for {stall_s} s")
