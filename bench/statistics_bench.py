"""Statistics and /metrics at a million finished runs, against a full count of the table.

    .venv/bin/python bench/statistics_bench.py [--rows 1000000] [--reps 30]
        [--postgres URL]   (any database of the server, e.g.
        postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres; the bench makes its own)

Builds the rows in the database itself, in one statement (a recursive CTE on
SQLite, generate_series on PostgreSQL), on the schema as it was before the
kept counts (revision 0010), then migrates to the newest revision, so the
counts are made by migration 0011's own backfill (its time is printed), and
50 runs wait in the line. Then, through the real app (httpx on
ASGITransport, no worker, so nothing moves), p50 and p99 of
`GET /api/v1/executions/queue/statistics` and of `GET /metrics`, and the
time of what statistics read before (full counts of the table).
PostgreSQL gets VACUUM ANALYZE after the load, as autovacuum would. A report,
not a test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from alembic import command
from httpx import ASGITransport, AsyncClient
from sqlalchemy import create_engine, text

import workers_bench
from testqueue.app import create_app
from testqueue.config import Settings
from testqueue.database import Database, alembic_config, sync_url
from testqueue.queue import status as queue_status
from testqueue.services import overview

PASSWORD = "statistics-bench-password"
TARGET_MS = 20.0
WAITING = 50

# i is 1..rows: 80 % pass, 10 % fail, 4 % error, 2 % timeout, 3 % cancelled, 1 % expired.
_SPREAD = """
    CASE WHEN i % 100 < 80 THEN 'pass' WHEN i % 100 < 90 THEN 'fail'
         WHEN i % 100 < 94 THEN 'error' WHEN i % 100 < 96 THEN 'timeout' END AS result,
    CASE WHEN i % 100 < 96 THEN 'completed' WHEN i % 100 < 99 THEN 'cancelled'
         ELSE 'expired' END AS status,
    i % 600 AS run_s
"""
_COLUMNS = (
    "test_case_id, status, result, priority, queued_at, started_at, completed_at, attempt, "
    "cancel_requested, required_tags, total_steps, passed_steps, failed_steps, skipped_steps, "
    "retries, retry_on, retried, flaky, concurrency_limit"
)
_INSERT = {
    "sqlite": f"""
        INSERT INTO executions ({_COLUMNS})
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
        SELECT 1, status, result, 5, datetime('2026-01-01', '+' || i || ' seconds'),
            CASE WHEN status <> 'expired' THEN datetime('2026-01-01', '+' || (i + 2) || ' seconds')
            END,
            datetime('2026-01-01', '+' || (i + 2 + run_s) || ' seconds'),
            1, 0, '', 0, 0, 0, 0, 0, '', 0, 0, 1
        FROM (SELECT i, {_SPREAD} FROM n)
    """,
    "postgresql": f"""
        INSERT INTO executions ({_COLUMNS})
        SELECT 1, status, result, 5, timestamptz '2026-01-01' + i * interval '1 second',
            CASE WHEN status <> 'expired'
                THEN timestamptz '2026-01-01' + (i + 2) * interval '1 second' END,
            timestamptz '2026-01-01' + (i + 2 + run_s) * interval '1 second',
            1, false, '', 0, 0, 0, 0, 0, '', 0, false, 1
        FROM (SELECT i, {_SPREAD} FROM generate_series(1, :rows) AS i) AS spread
    """,
}
_CASE = (
    "INSERT INTO test_cases (id, title, description, test_type, priority, steps, "
    "expected_result, preconditions, test_data, runner, required_tags, tags, retries, "
    "retry_on, concurrency_limit, dedupe, created_at, updated_at) VALUES (1, 'bench', '', "
    "'e2e', 'medium', '[]', '', '', '{}', 'command', '', '', 0, '', 1, false, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def build(settings: Settings, rows: int) -> dict[str, float]:
    """The rows at revision 0010, then the newest revision; seconds each step took."""
    config = alembic_config(settings.database_url)
    command.upgrade(config, "0010")
    kind = "sqlite" if settings.is_sqlite else "postgresql"
    took = {}
    engine = create_engine(sync_url(settings.database_url))
    with engine.begin() as conn:
        conn.execute(text(_CASE))
        start = time.perf_counter()
        conn.execute(text(_INSERT[kind]), {"rows": rows})
        took[f"insert {rows:,}, before the kept counts"] = time.perf_counter() - start
    start = time.perf_counter()
    command.upgrade(config, "head")
    took["migrate (backfill)"] = time.perf_counter() - start
    # The triggers' cost on writes: as many rows again in one statement, counted as they go.
    extra = max(1, rows // 100)
    with engine.begin() as conn:
        start = time.perf_counter()
        conn.execute(text(_INSERT[kind]), {"rows": extra})
        took[f"insert {extra:,} more, kept counts on"] = time.perf_counter() - start
    if kind == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return took


async def measure(settings: Settings, reps: int) -> dict[str, list[float]]:
    """Milliseconds per call of statistics, /metrics and the old full count."""
    app = create_app(settings, with_worker=False)
    timings: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as client:
            token = await _sign_in(client)
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(WAITING):
                answer = await client.post("/api/v1/executions/tests/1/run", headers=headers)
                answer.raise_for_status()
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "GET /executions/queue/statistics": lambda: _get(
                    client, "/api/v1/executions/queue/statistics", headers
                ),
                "GET /metrics": lambda: _get(client, "/metrics", {}),
            }
            for name, call in calls.items():
                timings[name] = await _repeat(call, reps)
            db: Database = app.state.testqueue.db
            timings["statistics as it was: full counts (before)"] = await _repeat(
                lambda: _statistics_before(db, settings), 3
            )
    return timings


async def _statistics_before(db: Database, settings: Settings) -> None:
    """What `GET .../statistics` read before the kept counts: the status snapshot, a
    grouped count of every execution by status and by result, and the workers."""
    await overview.read_status(db, settings, 0, 0)
    await queue_status.counts_by(db)
    await queue_status.workers(db, settings.lease_ttl)


async def _sign_in(client: AsyncClient) -> str:
    answer = await client.post(
        "/api/v1/auth/login", data={"username": "admin", "password": PASSWORD}
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


async def _get(client: AsyncClient, path: str, headers: dict[str, str]) -> None:
    answer = await client.get(path, headers=headers)
    answer.raise_for_status()


async def _repeat(call: Callable[[], Awaitable[Any]], reps: int) -> list[float]:
    await call()  # warm
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(label: str, took: dict[str, float], timings: dict[str, list[float]]) -> None:
    print(f"\n{label}")
    for step, seconds in took.items():
        print(f"  {step:<44} {seconds:8.2f} s")
    for name, times in timings.items():
        ordered = sorted(times)
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        target = "" if "before" in name else f"  (target p50 < {TARGET_MS:g} ms)"
        print(f"  {name:<44} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms{target}")


def run_on(database_url: str, rows: int, reps: int, folder: Path) -> None:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        testqueue_admin_password=PASSWORD,
        secret_key="statistics-bench-secret-key-0123456789abcdef",
        artifacts_dir=folder / "artifacts",
        work_dir=folder,
        log_level="WARNING",
    )
    took = build(settings, rows)
    timings = asyncio.run(measure(settings, reps))
    kind = "SQLite" if settings.is_sqlite else "PostgreSQL"
    report(f"{kind}: {rows:,} finished executions, {WAITING} waiting", took, timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--postgres", help="a database URL of the PostgreSQL server to use")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="testqueue-statistics-") as name:
        folder = Path(name)
        if args.only != "postgres":
            run_on(f"sqlite:///{folder / 'bench.db'}", args.rows, args.reps, folder)
        if args.postgres and args.only != "sqlite":
            with workers_bench.fresh_database(args.postgres) as url:
                run_on(url, args.rows, args.reps, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
