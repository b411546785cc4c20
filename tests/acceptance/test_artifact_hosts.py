"""A worker and an API host that share no folder: screenshots travel through PostgreSQL.

`testqueue worker` and `testqueue serve --no-worker` run with different
ARTIFACTS_DIR and WORK_DIR; the worker runs a browser test in the real Chromium
and the API host serves its screenshot from the database, in the API and on the
dashboard. A worker with a small ARTIFACT_MAX_RUN_BYTES keeps what fits and says
why it kept nothing more.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conftest import ADMIN_PASSWORD
from process import Process, Server, wait_for
from testqueue.queue.postgres import libpq_dsn

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT_S = 120.0


@pytest.fixture
def hosts(tmp_path: Path, postgres_url: str) -> Iterator[list[Process]]:
    """Processes a test starts; all are stopped at the end."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _worker(folder: Path, url: str, hosts: list[Process], **env: object) -> Process:
    worker = Process(_folder(folder), url, "worker", **env)
    hosts.append(worker)
    return worker.start()


def _screenshots(server: Server, *names: str) -> int:
    """A browser test case that opens the sign-in page and takes a screenshot per name."""
    steps: list[dict[str, Any]] = [{"action": "goto", "url": "/signin"}]
    steps += [{"action": "screenshot", "name": name} for name in names]
    created = server.call(
        "POST", "/tests", json={"title": "shots", "runner": "browser", "steps": steps}
    )
    return int(created["id"])


def _run(server: Server, test_case_id: int) -> dict[str, Any]:
    run = server.call(
        "POST", f"/executions/tests/{test_case_id}/run", json={"base_url": server.base_url}
    )
    detail: dict[str, Any] = wait_for(
        lambda: server.call("GET", f"/executions/{run['id']}"),
        lambda d: d["status"] == "completed",
        timeout=RUN_TIMEOUT_S,
    )
    return detail


def _chunks(url: str, artifact_ids: list[int]) -> int:
    with psycopg.connect(libpq_dsn(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM artifact_chunks WHERE artifact_id = ANY(%s)", (artifact_ids,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _files(folder: Path) -> list[Path]:
    return [p for p in (folder / "artifacts").rglob("*") if p.is_file()]


@contextlib.contextmanager
def _dashboard(server: Server) -> Iterator[httpx.Client]:
    """A dashboard client of `server`, signed in as admin with its form."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        form = client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        fields = {"username": "admin", "password": ADMIN_PASSWORD, "csrf": csrf[1]}
        assert client.post("/signin", data=fields).status_code == 303
        yield client


def test_the_api_host_serves_a_screenshot_taken_on_a_worker_with_no_shared_folder(
    tmp_path: Path, postgres_url: str, hosts: list[Process]
) -> None:
    api_folder, worker_folder = _folder(tmp_path / "api"), tmp_path / "worker"
    server = Server(api_folder, postgres_url, "--no-worker")
    hosts.append(server)
    server.start()
    worker = _worker(worker_folder, postgres_url, hosts)

    detail = _run(server, _screenshots(server, "signin"))

    assert detail["result"] == "pass", detail
    [shot] = detail["artifacts"]
    assert (shot["name"], shot["stored"], shot["error"]) == ("step-02-signin.png", True, None)
    served = httpx.get(f"{server.base_url}{shot['url']}", headers=server.headers, timeout=10)
    assert served.status_code == 200, served.text
    assert served.content.startswith(PNG_MAGIC)
    assert len(served.content) == shot["size_bytes"]
    # Neither host holds the file: the API host never had it, the worker let it go once stored.
    assert _files(api_folder) == []
    assert _files(worker_folder) == []

    page_url = f"/executions/{detail['id']}"
    image_url = f"/executions/{detail['id']}/artifacts/{shot['id']}"
    with _dashboard(server) as dashboard:
        page = dashboard.get(page_url)
        image = dashboard.get(image_url)
    assert f'<img class="shot" src="{image_url}"' in page.text
    assert image.status_code == 200
    assert image.content == served.content

    assert _chunks(postgres_url, [shot["id"]]) > 0
    server.call("DELETE", f"/executions/{detail['id']}")
    assert _chunks(postgres_url, [shot["id"]]) == 0
    worker.terminate()


def test_a_worker_over_its_cap_keeps_what_fits_and_the_api_host_says_why(
    tmp_path: Path, postgres_url: str, hosts: list[Process]
) -> None:
    server = Server(_folder(tmp_path / "api"), postgres_url, "--no-worker")
    hosts.append(server)
    server.start()
    first = _worker(tmp_path / "first", postgres_url, hosts)
    measured = _run(server, _screenshots(server, "alone"))["artifacts"][0]["size_bytes"]
    first.terminate()
    # Two screenshots of one page are about the same size: room for one and a half.
    cap = measured * 3 // 2
    _worker(tmp_path / "capped", postgres_url, hosts, artifact_max_run_bytes=cap)

    detail = _run(server, _screenshots(server, "one", "two"))

    kept, refused = detail["artifacts"]
    assert (kept["stored"], refused["stored"]) == (True, False)
    assert "ARTIFACT_MAX_RUN_BYTES" in refused["error"]
    answer = httpx.get(f"{server.base_url}{refused['url']}", headers=server.headers, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["detail"] == f"artifact {refused['id']} was not kept: {refused['error']}"
    assert _chunks(postgres_url, [refused["id"]]) == 0
    log = httpx.get(
        f"{server.base_url}/api/v1/executions/{detail['id']}/log", headers=server.headers
    ).text
    assert f"artifact {refused['name']} was not kept" in log
    with _dashboard(server) as dashboard:
        page = dashboard.get(f"/executions/{detail['id']}").text
    assert "Not kept: " in page
    assert f'/artifacts/{refused["id"]}"' not in page
