"""A run whose process finished is recorded once, even when `serve` dies before the record.

The database is held (SQLite's write lock, PostgreSQL's claim lock) from the
moment the run's command ends, so its outcome can only be in the worker's
memory and journal when the server is killed with -9. After the restart the
run is recorded from the journal: completed, its first attempt, its command
started once.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from process import Server, wait_for, wait_for_progress
from spans import max_overlap
from testqueue.queue.postgres import LINE_LOCK_KEY, libpq_dsn

pytestmark = pytest.mark.slow

# Notes its start, waits for the gate, notes its end, exits.
GATED = r"""
echo "S $TESTQUEUE_EXECUTION_ID $TESTQUEUE_ATTEMPT" >> "$1/lines"
while [ ! -e "$1/gate" ]; do sleep 0.02; done
echo "E $TESTQUEUE_EXECUTION_ID $TESTQUEUE_ATTEMPT" >> "$1/lines"
"""


def lines(folder: Path) -> list[str]:
    path = folder / "lines"
    return path.read_text().splitlines() if path.exists() else []


@contextmanager
def database_held(database_url: str) -> Iterator[None]:
    """No worker may record a finish meanwhile: the database's write (or claim) lock is
    held by this test."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as pg:
        pg.execute("SELECT pg_advisory_lock(%s)", (LINE_LOCK_KEY,))
        yield
        pg.execute("SELECT pg_advisory_unlock(%s)", (LINE_LOCK_KEY,))


def journaled(folder: Path) -> bool:
    return any(p.stat().st_size for p in (folder / "testqueue-journal").glob("*/*.journal"))


def test_a_run_that_finished_before_kill_9_is_recorded_from_the_journal_not_run_again(
    tmp_path: Path, database_url: str
) -> None:
    server = Server(tmp_path, database_url, max_concurrent_executions=2)
    try:
        server.start()
        case_id = server.call(
            "POST",
            "/tests",
            json={"title": "gated", "command": ["sh", "-c", GATED, "gated", str(tmp_path)]},
        )["id"]
        execution_id = server.call("POST", f"/executions/tests/{case_id}/run")["id"]
        wait_for(lambda: lines(tmp_path), lambda seen: seen == [f"S {execution_id} 1"])

        with database_held(server.env["DATABASE_URL"]):
            (tmp_path / "gate").touch()
            wait_for(lambda: journaled(tmp_path), bool)
            assert lines(tmp_path)[-1] == f"E {execution_id} 1"
            # Its outcome is journaled; the database cannot have it: the lock is ours.
            assert server.call("GET", f"/executions/{execution_id}")["status"] == "running"
            server.kill9()

        server.start()
        done = wait_for(
            lambda: server.call("GET", f"/executions/{execution_id}"),
            lambda d: d["status"] == "completed",
        )
        assert (done["result"], done["attempt"], done["exit_code"]) == ("pass", 1, 0)
        assert lines(tmp_path) == [f"S {execution_id} 1", f"E {execution_id} 1"]
        assert "recorded the finishes a gone worker journaled" in server.log()
        assert not list((tmp_path / "testqueue-journal").glob("*/*.recovering"))
    finally:
        server.stop()


RUNS = 2000
SLOTS = 5
KILLS = 3
# Around a kill: a command that ended this close to it may have ended unseen by its worker.
IN_FLIGHT_S = 0.1
# Notes its start and its end with the wall clock (the test's own clock too).
NOTED = (
    'echo "S $TESTQUEUE_EXECUTION_ID $TESTQUEUE_ATTEMPT $EPOCHREALTIME" >> "$0/lines"; '
    'echo "E $TESTQUEUE_EXECUTION_ID $TESTQUEUE_ATTEMPT $EPOCHREALTIME" >> "$0/lines"'
)


def events(folder: Path) -> list[tuple[str, int, int, float]]:
    found = []
    for line in lines(folder):
        kind, execution_id, attempt, moment = line.split()
        found.append((kind, int(execution_id), int(attempt), float(moment.replace(",", "."))))
    return found


def ended(folder: Path) -> int:
    return sum(1 for line in lines(folder) if line.startswith("E "))


def test_2000_runs_through_three_kill_9_none_lost_none_overlap_none_finished_runs_again(
    tmp_path: Path, database_url: str
) -> None:
    server = Server(tmp_path, database_url, max_concurrent_executions=SLOTS)
    try:
        server.start()
        case_id = server.call(
            "POST",
            "/tests",
            json={"title": "noted", "command": ["bash", "-c", NOTED, str(tmp_path)]},
        )["id"]
        for _ in range(RUNS // 1000):
            server.call("POST", "/executions/bulk", json={"test_case_ids": [case_id] * 1000})
        kills: list[float] = []
        rng = random.Random()
        for kill in range(KILLS):
            target = int(RUNS * (kill + rng.uniform(0.3, 0.9)) / (KILLS + 1))
            wait_for_progress(lambda: ended(tmp_path), target)
            kills.append(time.time())
            server.kill9()
            server.start()
        wait_for_progress(
            lambda: server.call("GET", "/executions?status=completed&limit=1")["total"], RUNS
        )
    finally:
        server.stop()

    seen = events(tmp_path)
    starts: dict[int, list[int]] = {}
    for kind, execution_id, attempt, _ in seen:
        if kind == "S":
            starts.setdefault(execution_id, []).append(attempt)
    assert len(starts) == RUNS, "every run started"
    assert {e for k, e, _, _ in seen if k == "E"} == set(starts), "every run finished: none lost"

    # A run cut off by a kill ends with it: its process died with the server (PR_SET_PDEATHSIG).
    opened: dict[tuple[int, int], float] = {}
    spans = []
    for kind, execution_id, attempt, moment in seen:
        if kind == "S":
            opened[(execution_id, attempt)] = moment
        else:
            spans.append((opened.pop((execution_id, attempt)), moment))
    for began in opened.values():
        spans.append((began, min(k for k in kills if k >= began)))
    assert max_overlap(spans) <= SLOTS, "never more running than slots"

    # A run whose process finished is recorded once; only runs in flight at a kill may run
    # again: those whose command ended in the instant before it (its exit not yet seen by
    # the worker) or started as it came (a child forked as its parent died).
    ended_first = {e: m for k, e, a, m in seen if k == "E" and a == 1}
    again = {e: ended_first[e] for e, attempts in starts.items() if len(attempts) > 1}
    far_from_kills = {
        e: min(abs(moment - k) for k in kills)
        for e, moment in again.items()
        if min(abs(moment - k) for k in kills) > IN_FLIGHT_S
    }
    assert far_from_kills == {}, "runs that finished away from any kill ran again"
    assert len(again) <= KILLS * SLOTS * 4, f"{len(again)} runs ran again"
