"""The request path: what one HTTP call costs, as a ratio to `GET /health` in the same run.

    .venv/bin/python bench/request_path.py [--samples 2000] [--postgres URL | --sqlite-only]

A real server (bench/noop_server.py, as in queue_bench, API only: the queue is
paused, so nothing runs) on a fresh SQLite file and on a new database of the
PostgreSQL server (default: the local one, skipped with a note when it does
not answer). One client, one kept-alive connection, calls interleaved round
by round so that a burst of load elsewhere on the machine touches every route
alike. `GET /health` touches neither the database nor a token: it is the floor
of the web stack, and every figure is read against it.

- `GET /users/me`: answered from the row the token check reads, so this minus
  health is what the token check adds to every authenticated call.
- `GET queue/status` and `GET queue/statistics` with 1,000 pending.
- `POST .../run`: a run queued and committed before the answer (201), in a
  second phase (the line grows from 1,000 as it goes), beside `GET /health`
  again.

Targets (ratio of medians): run <= 1.5x health on SQLite, <= 2.5x on
PostgreSQL; token check <= 0.2x health; status and statistics <= 2x health
on SQLite, <= 3x on PostgreSQL. A report, not a test: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

import queue_bench as qb
import workers_bench

PENDING = 1000
DEFAULT_PG = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Route:
    key: str
    label: str
    method: str
    path: str
    status: int = 200


# Targets as multiples of GET /health: (SQLite, PostgreSQL); None: context only.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "me": (None, None),
    "token": (0.2, 0.2),
    "run": (1.5, 2.5),
    "status": (2.0, 3.0),
    "statistics": (2.0, 3.0),
}


def routes(case_id: int) -> list[Route]:
    run = f"/executions/tests/{case_id}/run"
    return [
        Route("health", "GET /health", "GET", "/health"),
        Route("me", "GET /users/me (the token check)", "GET", "/users/me"),
        Route("run", "POST /executions/tests/{id}/run", "POST", run, 201),
        Route("status", f"GET queue/status ({PENDING} pending)", "GET", "/executions/queue/status"),
        Route("statistics", "GET queue/statistics", "GET", "/executions/queue/statistics"),
    ]


def measure(database_url: str | None, samples: int) -> dict[str, list[float]]:
    usage = qb.Usage()
    with tempfile.TemporaryDirectory(prefix="testqueue-path-") as folder:
        srv = qb.Server(Path(folder), usage, worker=False, database_url=database_url)
        try:
            srv.start()
            srv.api.call("POST", "/executions/queue/pause")
            case_id = srv.create_case("noop")
            qb.fill_line(srv, case_id, PENDING)
            chosen = {r.key: r for r in routes(case_id)}
            times: dict[str, list[float]] = {key: [] for key in chosen}
            # The reads first, the line standing at PENDING; then the run call, which adds
            # to the line, beside `GET /health` again.
            for keys in (("health", "me", "status", "statistics"), ("health", "run")):
                phase = [chosen[key] for key in keys]
                for _ in range(50):  # warm-up: connections, statement caches
                    for r in phase:
                        qb.expect(srv.api.send(r.method, r.path), r.status)
                for _ in range(samples):
                    for r in phase:
                        began = time.perf_counter()
                        qb.expect(srv.api.send(r.method, r.path), r.status)
                        times[r.key].append((time.perf_counter() - began) * 1000)
        except BaseException:
            sys.stderr.write(f"server log:\n{srv.log_tail()}\n")
            raise
        finally:
            srv.stop()
    return times


def report(where: str, column: int, times: dict[str, list[float]]) -> None:
    med = {key: statistics.median(values) for key, values in times.items()}
    health = med["health"]
    med["token"] = max(0.0, med["me"] - health)
    print(f"\n{where}: one kept-alive connection, medians of {len(times['health'])} calls each")
    print(f"  {'GET /health':44} {health:6.3f} ms   1.00x")
    labels = {r.key: r.label for r in routes(0)}
    labels["token"] = "token check adds (users/me - health)"
    for key in ("me", "token", "run", "status", "statistics"):
        ratio = med[key] / health
        target = TARGETS[key][column]
        verdict = (
            ""
            if target is None
            else f"   target <= {target:g}x  " + ("met" if ratio <= target else "MISSED")
        )
        p99 = "" if key == "token" else f"  p99 {qb.percentile(times[key], 99):6.3f} ms"
        print(f"  {labels[key]:44} {med[key]:6.3f} ms  {ratio:5.2f}x{p99}{verdict}")


def postgres_answers(url: str) -> bool:
    try:
        psycopg.connect(workers_bench.conninfo(url), connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="calls per route")
    parser.add_argument(
        "--postgres", metavar="URL", default=DEFAULT_PG, help="a database of the server to use"
    )
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    print("testqueue request path")
    for line in qb.machine():
        print(f"  {line}")
    qb.wait_quiet()
    report("SQLite", 0, measure(None, args.samples))
    if args.sqlite_only:
        return 0
    if not postgres_answers(args.postgres):
        print(f"\nPostgreSQL: {args.postgres} does not answer; not measured")
        return 0
    with workers_bench.fresh_database(args.postgres) as database_url:
        report("PostgreSQL", 1, measure(database_url, args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
