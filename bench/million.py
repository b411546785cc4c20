"""History at a million runs: every history read, the dashboard and the run call.

    .venv/bin/python bench/million.py [--rows 1000000] [--reps 30]
        [--postgres URL]   (any database of the server, e.g.
        postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres; the bench makes its own)

Builds the rows in the database itself, in one statement (a recursive CTE on
SQLite, generate_series on PostgreSQL): finished runs spread over 180 days,
200 test cases, 20 users, results 85 % pass, 9 % fail, 3 % error, 1 %
timeout, 1.5 % cancelled, 0.5 % expired, every fifth run in a batch of 50.
PostgreSQL folds the kept counts the load appended (as the first read of
them would) and gets VACUUM ANALYZE, as autovacuum would; SQLite gets nothing.
Then it measures every route through the real app (httpx on
ASGITransport, no worker, so nothing moves): p50 and p99 per route, a test
case's trends, the run call against the same on an empty database, and one
retention pass over the oldest 5 % (its longest transaction). A report, not a
test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

import workers_bench
from testqueue.app import create_app
from testqueue.config import Settings
from testqueue.database import Database, migrate
from testqueue.queue import counts, prune
from testqueue.web import trends

PASSWORD = "million-bench-password"
CASES = 200
USERS = 20
BATCH_SIZE = 50
DAYS = 180
TARGET_MS = 20.0
TARGET_TREND_MS = 50.0
# Rounds of the run call on each database, alternated.
ROUNDS = 8
END = datetime(2026, 11, 30, tzinfo=UTC)

# i is 1..rows; h a cheap hash of it that spreads results, users and cases.
_SPREAD = """
    CASE WHEN h < 85 THEN 'pass' WHEN h < 94 THEN 'fail' WHEN h < 97 THEN 'error'
         WHEN h < 98 THEN 'timeout' END AS result,
    CASE WHEN h < 98 THEN 'completed' WHEN h < 99.5 THEN 'cancelled' ELSE 'expired' END
        AS status,
    1 + (i * 7) % {cases} AS test_case_id,
    {first_user} + (i * 13) % {users} AS user_id,
    CASE WHEN i % 5 = 0 THEN 1 + (i / 5 - 1) / {batch} END AS batch_id,
    1 + h % 10 AS priority,
    CASE WHEN h < 98 THEN 1 ELSE 0 END AS started,
    CASE WHEN h < 85 AND i % 50 = 0 THEN 1 ELSE 0 END AS flaky
"""
_COLUMNS = (
    "test_case_id, user_id, status, result, priority, queued_at, started_at, completed_at, "
    "attempt, cancel_requested, required_tags, total_steps, passed_steps, failed_steps, "
    "skipped_steps, batch_id, flaky"
)


def _values(stamp: Callable[[str], str]) -> str:
    """The SELECT list over (i, h, ...spread): `stamp(seconds)` makes a timestamp."""
    return (
        f"test_case_id, user_id, status, result, priority, {stamp('t')}, "
        f"CASE WHEN started = 1 THEN {stamp('t + 2')} END, {stamp('t + 30')}, "
        "1, false, '', 3, 3, 0, 0, batch_id, flaky = 1"
    )


def _load_sql(kind: str, rows: int, first_user: int) -> str:
    spread = _SPREAD.format(cases=CASES, users=USERS, first_user=first_user, batch=BATCH_SIZE)
    start = int((END - timedelta(days=DAYS)).timestamp())
    step = DAYS * 86400 / rows
    if kind == "sqlite":
        numbers = (
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}), "
            f"h(i, h, t) AS (SELECT i, ((i * 2654435761) % 4294967296) % 1000 / 10.0, "
            f"{start} + i * {step} FROM n)"
        )
        # As SQLAlchemy writes them: text that sorts as the instant does.
        values = _values(lambda s: f"strftime('%Y-%m-%d %H:%M:%S', {s}, 'unixepoch') || '.000000'")
        values = values.replace("false", "0").replace("flaky = 1", "flaky")
        return (
            f"INSERT INTO executions ({_COLUMNS}) {numbers} "
            f"SELECT {values} FROM (SELECT i, t, {spread} FROM h)"
        )
    values = _values(lambda s: f"to_timestamp({s})")
    return (
        f"INSERT INTO executions ({_COLUMNS}) SELECT {values} FROM ("
        f"SELECT i, t, {spread} FROM (SELECT i, ((i * 2654435761) % 4294967296) % 1000 / 10.0 "
        f"AS h, {start} + i * {step} AS t FROM generate_series(1, {rows}) AS i) AS g) AS s"
    )


async def build(settings: Settings, rows: int) -> None:
    """Users, test cases, batches and `rows` finished executions, each kind in one statement."""
    db = Database(settings)
    kind = db.kind
    async with db.write() as conn:
        for n in range(USERS):
            await conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, is_active, created_at) "
                    "VALUES (:u, 'x', 'member', true, :now)"
                ),
                {"u": f"bench{n}", "now": END},
            )
        first_user = (
            await conn.execute(text("SELECT min(id) FROM users WHERE username LIKE 'bench%'"))
        ).scalar_one()
        for n in range(CASES):
            await conn.execute(
                text(
                    "INSERT INTO test_cases (title, description, test_type, priority, steps, "
                    "expected_result, preconditions, test_data, runner, command, required_tags,"
                    " tags, retries, retry_on, concurrency_limit, dedupe, created_at, "
                    "updated_at) VALUES (:t, '', 'e2e', 'medium', '[]', '', '', '{}', "
                    "'command', '[\"true\"]', '', '', 0, '', 1, false, :now, :now)"
                ),
                {"t": f"case {n}", "now": END},
            )
        batches = rows // 5 // BATCH_SIZE + 1
        for n in range(batches):
            await conn.execute(
                text("INSERT INTO batches (name, total, created_at) VALUES (:n, :k, :at)"),
                {"n": f"nightly {n}", "k": BATCH_SIZE, "at": END - timedelta(days=DAYS)},
            )
        await conn.execute(text(_load_sql(kind, rows, first_user)))
    if kind == "postgresql":
        await counts.fold(db)  # a million appended count changes, folded once
        async with db.autocommit() as conn:
            await conn.execute(text("VACUUM ANALYZE"))
    await db.dispose()


async def _timed(call: Callable[[], Awaitable[Any]], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        began = time.perf_counter()
        await call()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def _signed_in(client: AsyncClient) -> str:
    """Sign the client in to the dashboard and the API; the API's bearer token."""
    token = (
        await client.post("/api/v1/auth/login", data={"username": "admin", "password": PASSWORD})
    ).json()["access_token"]
    form = await client.get("/signin")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce is not None
    fields = {"username": "admin", "password": PASSWORD, "csrf": nonce[1]}
    await client.post("/signin", data=fields)
    return str(token)


def routes(mid: int) -> list[tuple[str, str, float | None]]:
    """(what, path, target ms or None to only measure); `mid` the middle execution."""
    batch = 1 + mid // 5 // BATCH_SIZE
    api = "/api/v1/executions"
    return [
        ("history, first page", api, TARGET_MS),
        ("status=completed", f"{api}?status=completed", TARGET_MS),
        ("status=failed", f"{api}?status=failed", TARGET_MS),
        ("status=cancelled", f"{api}?status=cancelled", TARGET_MS),
        ("status=expired", f"{api}?status=expired", TARGET_MS),
        ("status=pending (none)", f"{api}?status=pending", TARGET_MS),
        ("result=fail", f"{api}?result=fail", TARGET_MS),
        ("result=timeout", f"{api}?result=timeout", TARGET_MS),
        ("test_case_id", f"{api}?test_case_id=7", TARGET_MS),
        ("user_id", f"{api}?user_id=USER", TARGET_MS),
        ("batch_id", f"{api}?batch_id={batch}", TARGET_MS),
        ("before_id (middle)", f"{api}?before_id={mid}", TARGET_MS),
        ("result=fail&before_id (middle)", f"{api}?result=fail&before_id={mid}", TARGET_MS),
        ("offset=500000 (documented slow)", f"{api}?offset=500000", None),
        ("queue/status", f"{api}/queue/status", TARGET_MS),
        ("queue/statistics (kept counters)", f"{api}/queue/statistics", None),
        ("dashboard: queue page", "/", TARGET_MS),
        ("dashboard: history", "/history", TARGET_MS),
        ("dashboard: history, older page", f"/history?before={mid}", TARGET_MS),
        ("dashboard: history of a test case", "/history?test_case=7", TARGET_MS),
        ("dashboard: a test case", "/tests/7", TARGET_MS),
        ("dashboard: a batch", f"/batches/{batch}", TARGET_MS),
    ]


async def measure_reads(settings: Settings, rows: int, reps: int) -> list[str]:
    app = create_app(settings, with_worker=False)
    lines = []
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as client:
            headers = {"Authorization": f"Bearer {await _signed_in(client)}"}
            async with app.state.testqueue.db.read() as conn:
                found = await conn.execute(text("SELECT id FROM users WHERE username = 'bench3'"))
                user_id = found.scalar_one()
            for what, path, target in routes(rows // 2):
                path = path.replace("USER", str(user_id))
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.status_code, response.text)

                async def read(p: str = path) -> None:
                    await client.get(p, headers=headers)

                lines.append(_line(what, await _timed(read, reps), target))
            state = app.state.testqueue

            async def trend() -> None:
                async with state.db.read() as conn:
                    await trends.trends(conn, 7)

            lines.append(_line("trends of a test case", await _timed(trend, reps), TARGET_TREND_MS))
    return lines


def _line(what: str, samples: list[float], target: float | None) -> str:
    p50, p99 = statistics.median(samples), _p(samples, 0.99)
    verdict = "" if target is None else ("met" if p50 < target else "MISSED")
    shown = f"{target:g} ms" if target is not None else "-"
    return f"  {what:<38} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   target {shown:<7} {verdict}"


@contextlib.asynccontextmanager
async def run_caller(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The run call on this database: POST /executions/tests/{id}/run, the queue still."""
    app = create_app(settings, with_worker=False)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as client:
            headers = {"Authorization": f"Bearer {await _signed_in(client)}"}
            made = await client.post(
                "/api/v1/tests", json={"title": "run call", "command": ["true"]}, headers=headers
            )
            path = f"/api/v1/executions/tests/{made.json()['id']}/run"

            async def run() -> None:
                response = await client.post(path, headers=headers)
                assert response.status_code == 201, response.text

            await _timed(run, 20)  # warm up
            yield run


async def run_calls(empty: Settings, full: Settings, reps: int) -> tuple[list[float], list[float]]:
    """The run call on both databases, in alternating rounds, so a busy moment of the
    machine falls on both alike."""
    alone: list[float] = []
    loaded: list[float] = []
    async with run_caller(empty) as on_empty, run_caller(full) as on_full:
        for _ in range(ROUNDS):
            alone += await _timed(on_empty, reps)
            loaded += await _timed(on_full, reps)
    return alone, loaded


async def prune_oldest(settings: Settings) -> prune.PruneReport:
    """One retention pass over the oldest 5 % of the runs, as a worker's loop makes it."""
    db = Database(settings)
    try:
        return await prune.prune(db, settings, days=DAYS * 0.95, now=END)
    finally:
        await db.dispose()


def _settings(database_url: str, folder: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        artifacts_dir=folder / "artifacts",
        testqueue_admin_password=PASSWORD,
        secret_key="million-bench-secret-key-0123456789abcdef",
        log_level="WARNING",
        retention_days=0,
    )


async def bench(database_url: str, empty_url: str, folder: Path, rows: int, reps: int) -> None:
    empty = _settings(empty_url, folder)
    migrate(empty)
    full = _settings(database_url, folder)
    migrate(full)
    app = create_app(full, with_worker=False)
    async with app.router.lifespan_context(app):
        pass  # the first start makes the admin account, before the bench's users exist
    began = time.perf_counter()
    await build(full, rows)
    print(f"built {rows:,} finished executions in {time.perf_counter() - began:.1f} s")
    for line in await measure_reads(full, rows, reps):
        print(line)
    alone, loaded = await run_calls(empty, full, reps)
    a, b = statistics.median(alone), statistics.median(loaded)
    print(
        f"  run call p50: empty {a:.2f} ms, at {rows:,} {b:.2f} ms "
        f"({(b / a - 1) * 100:+.1f} %; target within 10 %)"
    )
    report = await prune_oldest(full)
    print(f"  retention pass: {report.summary()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--postgres", metavar="URL", help="a database URL of the server to use")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="testqueue-million-") as name:
        folder = Path(name)
        if args.postgres is None:
            print("SQLite")
            urls = (f"sqlite:///{folder / 'full.db'}", f"sqlite:///{folder / 'empty.db'}")
            asyncio.run(bench(*urls, folder, args.rows, args.reps))
            return 0
        print("PostgreSQL")
        with (
            workers_bench.fresh_database(args.postgres) as full,
            workers_bench.fresh_database(args.postgres) as empty,
        ):
            asyncio.run(bench(full, empty, folder, args.rows, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
