"""kill -9 and SIGTERM of a real `testqueue serve`: nothing lost, order kept, nothing twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from process import Server, held_argv, marks, wait_for
from waiting import pid_alive


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    serve = Server(tmp_path, database_url, max_concurrent_executions=2)
    yield serve
    serve.stop()


def _queue_ids(server: Server) -> list[int]:
    return [q["execution_id"] for q in server.call("GET", "/executions/queue/status")["queue"]]


@pytest.mark.slow
def test_kill_9_loses_nothing_keeps_order_and_runs_nothing_twice(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    test_id = server.call("POST", "/tests", json={"title": "held", "command": held_argv(tmp_path)})[
        "id"
    ]
    priorities = [1, 1, 5, 10, 3, 5]
    ids = [
        server.call("POST", f"/executions/tests/{test_id}/run", json={"priority": p})["id"]
        for p in priorities
    ]
    first_two = ids[:2]
    wait_for(lambda: [len(marks(tmp_path, i)) for i in first_two], lambda n: n == [2, 2])
    waiting_before = _queue_ids(server)
    assert waiting_before == [ids[4], ids[2], ids[5], ids[3]]
    old_pids = [pid for i in first_two for pid in marks(tmp_path, i)]

    server.kill9()
    server.start()

    for execution_id in first_two:
        wait_for(
            lambda e=execution_id: server.call("GET", f"/executions/{e}"),
            lambda d: d["status"] == "running" and d["attempt"] == 2,
        )
    assert all(not pid_alive(pid) for pid in old_pids), "no process of the killed server lives on"
    assert _queue_ids(server) == waiting_before, "the pending runs kept their order"
    assert not (tmp_path / "marks" / "TWICE").exists()

    (tmp_path / "gate").touch()
    wait_for(lambda: server.call("GET", "/executions?status=completed")["total"], lambda n: n == 6)
    results = {e["id"]: e for e in server.call("GET", "/executions?limit=50")["items"]}
    assert sorted(results) == sorted(ids)
    assert {e["result"] for e in results.values()} == {"pass"}
    assert [results[i]["attempt"] for i in ids] == [2, 2, 1, 1, 1, 1]
    assert not (tmp_path / "marks" / "TWICE").exists()
    server.terminate()
    assert "dispatcher stopped" in server.log()


@pytest.mark.slow
def test_sigterm_hands_running_runs_back_and_they_run_after_restart(
    server: Server, tmp_path: Path
) -> None:
    server.env["SHUTDOWN_GRACE"] = "0.3"
    server.start()
    test_id = server.call("POST", "/tests", json={"title": "held", "command": held_argv(tmp_path)})[
        "id"
    ]
    ids = [server.call("POST", f"/executions/tests/{test_id}/run")["id"] for _ in range(3)]
    wait_for(lambda: [len(marks(tmp_path, i)) for i in ids[:2]], lambda n: n == [2, 2])
    pids = [pid for i in ids[:2] for pid in marks(tmp_path, i)]

    server.terminate()
    assert all(not pid_alive(pid) for pid in pids), "stopped at the end of the grace period"
    assert "dispatcher stopped" in server.log()

    server.start()
    (tmp_path / "gate").touch()
    wait_for(lambda: server.call("GET", "/executions?status=completed")["total"], lambda n: n == 3)
    items = {e["id"]: e for e in server.call("GET", "/executions")["items"]}
    assert [items[i]["attempt"] for i in ids] == [1, 1, 1], "a clean hand-back is no lost attempt"
    assert [len(marks(tmp_path, i)) for i in ids] == [4, 4, 2]
    assert not (tmp_path / "marks" / "TWICE").exists()
