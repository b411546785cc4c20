"""Batches at a release's size: queueing 1,000 executions in one call, and reading them back.

    .venv/bin/python bench/batch_bench.py [--reps 5] [--postgres URL]   (URL: any database of
    the server, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the bench makes its own)

A real server (bench/noop_server.py, as in queue_bench) with 1,000 test
cases tagged `release`. Each repetition queues them as one batch by their
tag (`POST /api/v1/batches`, one transaction, positions in the answer) and
reads the batch with all its executions (`GET /api/v1/batches/{id}`),
the queue paused so the line stands still. Figures are medians; targets:
queueing under 300 ms, reading under 20 ms. A report, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import queue_bench as qb
import workers_bench

CASES = 1000
READS = 20
TARGET_QUEUE_MS = 300.0
TARGET_READ_MS = 20.0


def measure(reps: int, admin_url: str | None) -> tuple[list[float], list[float]]:
    """On SQLite, or on a new database of the PostgreSQL server of `admin_url`."""
    if admin_url is None:
        return _measure(reps, None)
    with workers_bench.fresh_database(admin_url) as database_url:
        return _measure(reps, database_url)


def _measure(reps: int, database_url: str | None) -> tuple[list[float], list[float]]:
    usage = qb.Usage()
    queued: list[float] = []
    reads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="testqueue-batches-") as folder:
        srv = qb.Server(Path(folder), usage, worker=False, database_url=database_url)
        try:
            srv.start()
            srv.api.call("POST", "/executions/queue/pause")
            for n in range(CASES):
                srv.create_case(f"release check {n}", tags=["release"])
            for _ in range(reps):
                began = time.perf_counter()
                made = srv.api.call("POST", "/batches", {"tags": ["release"]})
                queued.append((time.perf_counter() - began) * 1000)
                if len(made["executions"]) != CASES:
                    raise qb.BenchError(f"the batch has {len(made['executions'])} executions")
                path = f"/batches/{made['batch']['id']}"

                def read(p: str = path) -> None:
                    qb.expect(srv.api.send("GET", p))

                reads += qb.timed_ms(read, READS)
        finally:
            srv.stop()
    return queued, reads


def report(what: str, samples: list[float], target: float) -> None:
    median = statistics.median(samples)
    verdict = "met" if median < target else "MISSED"
    print(
        f"  {what:34} median {median:7.1f} ms   p99 {qb.percentile(samples, 99):7.1f} ms"
        f"   target < {target:g} ms  {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="measure on a new database of this PostgreSQL server instead of SQLite",
    )
    args = parser.parse_args(argv)
    print("testqueue batch benchmark")
    for line in qb.machine():
        print(f"  {line}")
    where = "PostgreSQL" if args.postgres else "SQLite"
    queued, reads = measure(args.reps, args.postgres)
    print(f"\n{where}: a batch of {CASES} executions, {args.reps} repetitions")
    report("POST /batches (by tag, 1 call)", queued, TARGET_QUEUE_MS)
    report(f"GET /batches/{{id}} (all {CASES})", reads, TARGET_READ_MS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
