"""Worker benchmarks on PostgreSQL: an API host and separate worker processes.

    .venv/bin/python bench/workers_bench.py [--quick] [--only NAME ...] [--url URL]

Every measurement gets a fresh database on the local PostgreSQL server
(`CREATE DATABASE`, dropped afterwards `WITH (FORCE)`), an API host
(`bench/noop_server.py --no-worker`) and one or more worker processes
(`bench/noop_worker.py`), all configured from the environment with
LOG_LEVEL=WARNING. The client and its helpers (`Api`, `Server`, percentiles,
/proc CPU readings) come from `bench/queue_bench.py`; the client waits by
polling the database on its own connection, whose backend's CPU is left out of
PostgreSQL's figure.

Figures:
  overhead    run call on the API host -> noop runner's first instruction in the worker
  throughput  noop executions/s with 1, 2, 4 workers x 5, 50 slots, CPU per execution
  recovery    kill -9 of the worker holding 2 `sleep 30` runs -> both running on the other

This is a report, not a test: it exits 0 when a target is missed or a figure fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import queue_bench as qb
from queue_bench import (
    BULK_MAX,
    CLOCK_TICKS,
    CPUS,
    NOOP_SERVER,
    WARMUP_RUNS,
    BenchError,
    Server,
    Usage,
    percentile,
    process_cpu_s,
)

NOOP_WORKER = NOOP_SERVER.parent / "noop_worker.py"
DEFAULT_URL = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
WORKER_START_TIMEOUT_S = 60.0
SLEEP_COMMAND = ["sleep", "30"]
LEASE_TTL_S = 10.0  # the default; the recovery target
RECOVERY_DEADLINE_S = 45.0


@dataclass(frozen=True)
class Plan:
    overhead_runs: int = 300
    throughput_runs: int = 5_000
    worker_counts: tuple[int, ...] = (1, 2, 4)
    slot_counts: tuple[int, ...] = (5, 50)
    recovery_reps: int = 3


FULL = Plan()
QUICK = Plan(overhead_runs=100, throughput_runs=1_000, recovery_reps=1)


# -- PostgreSQL ---------------------------------------------------------------------------


def conninfo(url: str) -> str:
    """A SQLAlchemy URL as libpq understands it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


_db_numbers = itertools.count(1)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`; its SQLAlchemy URL."""
    name = f"tq_workers_bench_{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _stat_fields(pid: int | str) -> tuple[str, list[str]]:
    """(comm, the fields after it) of /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    head, tail = text.rsplit(")", 1)
    return head.split("(", 1)[1], tail.split()


def postgres_cpu_s(exclude: tuple[int, ...] = ()) -> float:
    """CPU of every PostgreSQL process, alive or reaped (the postmaster's children's time).

    Backends that exit are waited for by the postmaster, so their time is in its
    cutime/cstime; live ones count their own. `exclude` (live backends) is left out.
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            comm, fields = _stat_fields(entry.name)
            if comm != "postgres":
                continue
            parent_comm = _stat_fields(fields[1])[0] if fields[1] != "0" else ""
        except (OSError, IndexError):
            continue
        ticks = int(fields[11]) + int(fields[12])
        if parent_comm != "postgres":  # the postmaster: add its reaped children
            ticks += int(fields[13]) + int(fields[14])
        total += ticks
    return total / CLOCK_TICKS


# -- processes ----------------------------------------------------------------------------


class PgServer(Server):
    """noop_server.py --no-worker on PostgreSQL; the client polls through its own connection."""

    drain_poll_s = 0.02

    def __init__(self, root: Path, url: str, slots: int) -> None:
        super().__init__(root, Usage(), worker=False, database_url=url, slots=slots)
        self.url = url
        self.pg: psycopg.Connection[Any] | None = None
        self.pg_backend = 0

    def open_reader(self) -> None:
        self.pg = psycopg.connect(conninfo(self.url), autocommit=True)
        self.pg_backend = int(self.scalar("SELECT pg_backend_pid()"))

    def stop(self) -> None:
        if self.pg is not None:
            self.pg.close()
        super().stop()

    def scalar(self, query: str, *params: Any) -> Any:
        assert self.pg is not None
        row = self.pg.execute(query, params or None).fetchone()
        return None if row is None else row[0]

    def postgres_cpu_s(self) -> float:
        return postgres_cpu_s(exclude=(self.pg_backend,))

    def ids_in(self, ids: list[int]) -> tuple[str, tuple[Any, ...]]:
        return "id = ANY(%s)", (ids,)


class WorkerProc:
    """One noop_worker.py process."""

    def __init__(self, srv: PgServer, index: int, capacity: int | None = None) -> None:
        self.srv = srv
        self.index = index
        self.capacity = capacity
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = srv.root / f"worker{index}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}:{self.pid}"

    def start(self) -> None:
        argv = [sys.executable, str(NOOP_WORKER)]
        env = dict(self.srv.env)
        if self.capacity is not None:
            env["WORKER_CONCURRENCY"] = str(self.capacity)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.srv.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_registered(self) -> None:
        until = time.monotonic() + WORKER_START_TIMEOUT_S
        while not self.srv.scalar("SELECT count(*) FROM workers WHERE id = %s", self.worker_id):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"worker {self.index} exited at start:\n{self.log_tail()}")
            if time.monotonic() > until:
                raise BenchError(f"worker {self.index} did not register in time")
            time.sleep(0.02)

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=qb.SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Cluster:
    srv: PgServer
    capacity: int | None = None  # each worker's WORKER_CONCURRENCY; None: unset (all slots)
    workers: list[WorkerProc] = field(default_factory=list)

    def add_worker(self) -> WorkerProc:
        worker = WorkerProc(self.srv, len(self.workers) + 1, self.capacity)
        self.workers.append(worker)
        worker.start()
        worker.wait_registered()
        return worker


@contextlib.contextmanager
def cluster(admin_url: str, workers: int, slots: int, *, share: bool = False) -> Iterator[Cluster]:
    """A fresh database, an API host and `workers` worker processes; all stopped after.

    With `share`, each worker may hold only its share of the slots
    (WORKER_CONCURRENCY = slots / workers, rounded up), so all of them work.
    """
    with (
        fresh_database(admin_url) as url,
        tempfile.TemporaryDirectory(prefix="testqueue-wbench-") as folder,
    ):
        capacity = -(-slots // workers) if share else None
        found = Cluster(PgServer(Path(folder), url, slots), capacity)
        try:
            found.srv.start()
            for _ in range(workers):
                found.add_worker()
            yield found
        except BaseException:
            sys.stderr.write(f"server log:\n{found.srv.log_tail()}\n")
            for worker in found.workers:
                sys.stderr.write(f"worker {worker.index} log:\n{worker.log_tail()}\n")
            raise
        finally:
            for worker in found.workers:
                worker.stop()
            found.srv.stop()


# -- CPU snapshots ------------------------------------------------------------------------


@dataclass
class CpuMark:
    """CPU seconds of every process in the cluster, PostgreSQL and the machine, at one time."""

    server: float
    workers: list[float]
    postgres: float
    machine: float
    own: float
    wall: float

    @classmethod
    def take(cls, c: Cluster) -> CpuMark:
        return cls(
            server=c.srv.cpu_s(),
            workers=[w.cpu_s() for w in c.workers],
            postgres=c.srv.postgres_cpu_s(),
            machine=qb.machine_busy_s(),
            own=qb.own_cpu_s(),
            wall=time.monotonic(),
        )


def cpu_report(before: CpuMark, after: CpuMark, per: int) -> dict[str, Any]:
    """CPU ms per operation for each process, and the others' share of the machine."""
    server = after.server - before.server
    workers = [a - b for a, b in zip(after.workers, before.workers, strict=True)]
    postgres = after.postgres - before.postgres
    own = after.own - before.own
    wall = after.wall - before.wall
    others = (after.machine - before.machine) - server - sum(workers) - postgres - own
    return {
        "server_ms": server * 1000 / per,
        "workers_ms": [w * 1000 / per for w in workers],
        "postgres_ms": postgres * 1000 / per,
        "client_ms": own * 1000 / per,
        "busy_share": (after.machine - before.machine) / (wall * CPUS),
        "others_share": min(1.0, max(0.0, others / (wall * CPUS))),
    }


def cpu_line(cpu: dict[str, Any]) -> str:
    workers = " + ".join(f"{w:.2f}" for w in cpu["workers_ms"])
    return (
        f"CPU ms per execution: API host {cpu['server_ms']:.2f}, worker(s) {workers}, "
        f"PostgreSQL {cpu['postgres_ms']:.2f}, bench client {cpu['client_ms']:.2f}; "
        f"machine {cpu['busy_share']:.0%} busy of {CPUS} CPUs, others {cpu['others_share']:.0%}"
    )


# -- the figures --------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    value: float
    unit: str
    target: float | None = None
    at_least: bool = False

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.at_least else '<='} {qb._number(self.target)} {self.unit}"


def bench_overhead(plan: Plan, admin_url: str) -> list[Row]:
    print(
        f"\n1. queue overhead across processes: run call on the API host -> noop runner in "
        f"the worker\n  API host noop_server.py --no-worker + 1 noop_worker.py, 5 slots; "
        f"{plan.overhead_runs} sequential runs with a free slot after {WARMUP_RUNS} warm-up",
        flush=True,
    )
    print(f"  [others' CPU before: {qb.wait_quiet():.0%} of {CPUS} CPUs]", flush=True)
    with cluster(admin_url, workers=1, slots=5) as c:
        case_id = c.srv.create_case("noop")
        for _ in range(WARMUP_RUNS):
            qb.noop_run_ms(c.srv, case_id)
        before = CpuMark.take(c)
        lat = [qb.noop_run_ms(c.srv, case_id) for _ in range(plan.overhead_runs)]
        cpu = cpu_report(before, CpuMark.take(c), plan.overhead_runs)
        where = c.srv.scalar(
            "SELECT count(DISTINCT worker_id) FROM executions WHERE worker_id = %s",
            c.workers[0].worker_id,
        )
        if where != 1:
            raise BenchError("the runs were not run by the separate worker")
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(
        f"  p50 {p50:.2f} ms, p90 {percentile(lat, 90):.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(lat):.2f} ms, min {min(lat):.2f} ms\n  {cpu_line(cpu)}\n"
        "  (CPU per run includes the log read and the client's 1 ms completion polls)",
        flush=True,
    )
    return [
        Row("overhead p50 (API host -> worker)", p50, "ms", 4.0),
        Row("overhead p99 (API host -> worker)", p99, "ms", 14.0),
    ]


def throughput_once(c: Cluster, runs: int) -> dict[str, Any]:
    srv = c.srv
    case_id = srv.create_case("noop")
    srv.wait_done(srv.bulk([case_id] * 50))
    before = CpuMark.take(c)
    start = time.time()
    ids = qb.fill_line(srv, case_id, runs)
    enqueued = time.time()
    srv.wait_drained(timeout_s=max(60.0, runs / 50))
    cpu = cpu_report(before, CpuMark.take(c), runs)
    passed = srv.scalar(
        "SELECT count(*) FROM executions WHERE id >= %s AND status = 'completed' "
        "AND result = 'pass'",
        ids[0],
    )
    if passed != runs:
        raise BenchError(f"{passed} of {runs} executions passed")
    end = srv.scalar("SELECT max(completed_at) FROM executions").timestamp()
    split = srv.pg.execute(  # type: ignore[union-attr]
        "SELECT worker_id, count(*) FROM executions WHERE id >= %s GROUP BY worker_id",
        (ids[0],),
    ).fetchall()
    share = {wid: n for wid, n in split}
    return {
        "rate": runs / (end - start),
        "enqueue_s": enqueued - start,
        "total_s": end - start,
        "cpu": cpu,
        "split": [share.get(w.worker_id, 0) for w in c.workers],
    }


def bench_throughput(plan: Plan, admin_url: str) -> list[Row]:
    print(
        f"\n2. engine throughput: noop runner, API host + N workers x global slots\n"
        f"  {plan.throughput_runs} executions in bulk calls of {BULK_MAX}, first enqueue -> "
        "last completed_at; MAX_CONCURRENT_EXECUTIONS set for every process and\n"
        "  WORKER_CONCURRENCY to each worker's share of the slots (rounded up)",
        flush=True,
    )
    results: dict[tuple[int, int], float] = {}
    for workers, slots in itertools.product(plan.worker_counts, plan.slot_counts):
        before = qb.wait_quiet()
        try:
            with cluster(admin_url, workers=workers, slots=slots, share=True) as c:
                out = throughput_once(c, plan.throughput_runs)
        except BenchError as exc:
            print(f"  {workers} worker(s) x {slots} slots: could not measure: {exc}", flush=True)
            continue
        results[(workers, slots)] = out["rate"]
        print(
            f"  {workers} worker(s) x {slots:>2} slots: {out['rate']:,.0f} executions/s "
            f"(enqueue {out['enqueue_s']:.2f} s, total {out['total_s']:.2f} s; "
            f"runs per worker {out['split']}; others' CPU before {before:.0%})\n"
            f"      {cpu_line(out['cpu'])}",
            flush=True,
        )
    if not results:
        raise BenchError("no combination could be measured")
    print("\n  executions/s      " + "".join(f"{s:>8} slots" for s in plan.slot_counts))
    for workers in plan.worker_counts:
        cells = "".join(
            f"{results[(workers, s)]:>14,.0f}" if (workers, s) in results else f"{'-':>14}"
            for s in plan.slot_counts
        )
        print(f"  {workers} worker(s)      {cells}")
    (best_w, best_s), best = max(results.items(), key=lambda item: item[1])
    return [
        Row(f"throughput, best ({best_w} worker(s) x {best_s} slots)", best, "executions/s",
            1000.0, at_least=True),
    ]  # fmt: skip


def running_on(srv: PgServer, ids: list[int], worker_id: str, attempt: int) -> int:
    return int(
        srv.scalar(
            "SELECT count(*) FROM executions WHERE id = ANY(%s) AND status = 'running' "
            "AND worker_id = %s AND attempt = %s",
            ids,
            worker_id,
            attempt,
        )
    )


def wait_for(what: str, check: Any, deadline_s: float) -> float:
    """Poll `check()` until true; seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline_s:
            raise BenchError(f"{what}: not within {deadline_s} s")
        time.sleep(0.005)
    return time.monotonic() - start


def recovery_once(admin_url: str) -> tuple[float, float]:
    """(kill -> both requeued, kill -> both running on the survivor), in seconds."""
    with cluster(admin_url, workers=1, slots=5) as c:
        srv = c.srv
        doomed = c.workers[0]
        case_id = srv.create_case("sleep 30", runner="command", command=SLEEP_COMMAND)
        ids = [srv.run(case_id), srv.run(case_id)]
        wait_for("both runs running", lambda: running_on(srv, ids, doomed.worker_id, 1) == 2, 30)
        active = srv.api.call("GET", "/executions/queue/active")["executions"]
        holders = {item["worker_id"] for item in active if item["execution_id"] in ids}
        if holders != {doomed.worker_id}:
            raise BenchError(f"queue/active says {holders}, expected {doomed.worker_id}")
        survivor = c.add_worker()
        killed = time.monotonic()
        doomed.kill9()
        wait_for(
            "both requeued",
            lambda: (
                srv.scalar(
                    "SELECT count(*) FROM executions WHERE id = ANY(%s) AND attempt >= 2", ids
                )
                == 2
            ),
            RECOVERY_DEADLINE_S,
        )
        requeued = time.monotonic() - killed
        wait_for(
            "both running on the survivor",
            lambda: running_on(srv, ids, survivor.worker_id, 2) == 2,
            RECOVERY_DEADLINE_S,
        )
        running = time.monotonic() - killed
        for execution_id in ids:  # stop the sleeps before the survivor shuts down
            srv.api.call("POST", f"/executions/{execution_id}/cancel")
    return requeued, running


def bench_recovery(plan: Plan, admin_url: str) -> list[Row]:
    print(
        f"\n3. kill -9 recovery: 2 workers (same host), LEASE_TTL {LEASE_TTL_S:.0f} s, "
        f"HEARTBEAT_INTERVAL 1 s (defaults)\n  2 runs of {' '.join(SLEEP_COMMAND)!r} on "
        "worker A (B started after both run), kill -9 A -> both running on B with attempt 2; "
        f"{plan.recovery_reps} repetition(s)",
        flush=True,
    )
    times = []
    for rep in range(1, plan.recovery_reps + 1):
        requeued, running = recovery_once(admin_url)
        times.append(running)
        print(
            f"  rep {rep}: requeued after {requeued:.2f} s, both running on B after "
            f"{running:.2f} s",
            flush=True,
        )
    print(
        "  note: B is on the same host as A, so it sees A's pid is gone at its next heartbeat "
        "(<= 1 s) and does not wait out the lease. A survivor on another host would wait for "
        f"the lease to expire (up to {LEASE_TTL_S:.0f} s after A's last renewal, plus one "
        "heartbeat); that case cannot be measured on one machine and is not reported.",
        flush=True,
    )
    return [
        Row("kill -9 recovery, median (same host)", statistics.median(times), "s", LEASE_TTL_S),
        Row("kill -9 recovery, max (same host)", max(times), "s", LEASE_TTL_S),
    ]


FIGURES = {"overhead": bench_overhead, "throughput": bench_throughput, "recovery": bench_recovery}


# -- reporting ----------------------------------------------------------------------------


def machine_lines(admin_url: str) -> list[str]:
    lines = qb.machine()[:2]
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    versions = []
    for package in ("psycopg", "sqlalchemy", "uvicorn", "uvloop", "fastapi"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    lines.append(f"PostgreSQL {row[0] if row else '?'} at {admin_url.rsplit('@', 1)[-1]}")
    lines.append(f"processes: bench/noop_server.py --no-worker, bench/noop_worker.py; "
                 f"{', '.join(versions)}")  # fmt: skip
    return lines


def print_table(rows: list[Row]) -> None:
    header = ("figure", "value", "target", "met")
    cells = [
        (r.label, f"{qb._number(r.value)} {r.unit}", r.target_text,
         {True: "yes", False: "NO", None: "-"}[r.met])
        for r in rows
    ]  # fmt: skip
    if not cells:
        return
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    print("\nSummary (PostgreSQL, separate worker processes)")
    for row in [header, *cells]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="testqueue worker benchmarks (PostgreSQL).")
    parser.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(FIGURES),
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="a database URL on the server to use (databases are made beside it)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    plan = QUICK if args.quick else FULL
    # Wait less for a quiet machine than queue_bench does: the runtime stays modest.
    qb.QUIET_WAIT_S = 3.0 if args.quick else 10.0
    started = time.monotonic()
    print("testqueue worker benchmarks" + (" (--quick)" * args.quick))
    try:
        for line in machine_lines(args.url):
            print(f"  {line}")
    except psycopg.Error as exc:
        print(f"  PostgreSQL is not reachable at {args.url}: {exc}")
        return 0
    rows: list[Row] = []
    missing = []
    for name, run in FIGURES.items():
        if args.only and name not in args.only:
            continue
        try:
            rows += run(plan, args.url)
        except (BenchError, psycopg.Error, OSError) as exc:
            print(f"  could not measure: {exc}", flush=True)
            missing.append(name)
    print_table(rows)
    if missing:
        print(f"\nnot measured: {', '.join(missing)}")
    print(f"\n(total time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
