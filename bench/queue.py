"""Queue benchmarks on SQLite, through HTTP, against a real server process.

    .venv/bin/python bench/queue.py [--quick] [--only NAME ...] [--reps N] [--json FILE]

Each repetition starts its own server (`bench/noop_server.py`: the real app
under uvicorn, plus a `noop` runner) on a fresh SQLite file in a temporary
folder, with LOG_LEVEL=WARNING and 5 slots. The client is `http.client` on
one keep-alive connection, the cheapest client in the standard library; the
benchmark waits for runs to finish by reading the SQLite file (read-only) so
that waiting costs the server nothing. Every figure is the median over the
repetitions. See bench/README.md for what each figure measures.

This is a report, not a test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOOP_SERVER = HERE / "noop_server.py"
API = "/api/v1"
ADMIN_PASSWORD = "bench-admin-password"
SLOTS = 5
BULK_MAX = 1000
RAMP_RUNS = 8
COMMAND = ["bash", "-c", "echo $EPOCHREALTIME"]
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 30.0
# uvicorn closes a keep-alive connection idle for 5 s; reconnect before that.
IDLE_RECONNECT_S = 3.0
# Coarse enough that a waiting client takes little CPU from the server on a small machine.
DONE_POLL_S = 0.001
DRAIN_POLL_S = 0.05
WARMUP_RUNS = 20


class BenchError(Exception):
    """The benchmark could not measure what it meant to (not a missed target)."""


@dataclass(frozen=True)
class Plan:
    """How much work each figure does per repetition."""

    reps: int
    overhead_runs: int = 500
    ramp_rounds: int = 20
    throughput_runs: int = 10_000
    pending: int = 100_000
    read_samples: int = 50
    enqueue_calls: int = 2_000
    command_runs: int = 50


FULL = Plan(reps=5)
QUICK = Plan(
    reps=1,
    overhead_runs=100,
    ramp_rounds=5,
    throughput_runs=2_000,
    pending=10_000,
    read_samples=10,
    enqueue_calls=300,
    command_runs=10,
)


# -- the client ---------------------------------------------------------------------------


class Api:
    """One keep-alive HTTP/1.1 connection to the server, with the admin's token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.headers: dict[str, str] = {}
        self._conn: http.client.HTTPConnection | None = None
        self._last_used = 0.0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None or time.monotonic() - self._last_used > IDLE_RECONNECT_S:
            if self._conn is not None:
                self._conn.close()
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            self._conn.connect()  # sets TCP_NODELAY
        return self._conn

    def send(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """The raw exchange: status and body, nothing parsed."""
        conn = self._connection()
        headers = self.headers
        if body is not None:
            headers = {**headers, "Content-Type": content_type or "application/json"}
        conn.request(method, API + path, body, headers)
        response = conn.getresponse()
        data = response.read()
        self._last_used = time.monotonic()
        return response.status, data

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.send(method, path, body)
        if status >= 300:
            raise BenchError(f"{method} {path} answered {status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def text(self, path: str) -> str:
        status, data = self.send("GET", path)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {data[:300]!r}")
        return data.decode()

    def login(self) -> None:
        form = urllib.parse.urlencode({"username": "admin", "password": ADMIN_PASSWORD})
        status, data = self.send(
            "POST", "/auth/login", form.encode(), "application/x-www-form-urlencoded"
        )
        if status != 200:
            raise BenchError(f"login answered {status}: {data[:300]!r}")
        self.headers = {"Authorization": f"Bearer {json.loads(data)['access_token']}"}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# -- the server ---------------------------------------------------------------------------


class Server:
    """A noop_server process on a fresh SQLite file, its API and a read-only view of its file."""

    def __init__(self, root: Path, *, worker: bool = True) -> None:
        self.root = root
        self.db_path = root / "bench.db"
        self.port = _free_port()
        self.worker = worker
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Api(self.port)
        self._db: sqlite3.Connection | None = None

    def start(self) -> None:
        (self.root / "work").mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "TESTQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LOG_LEVEL": "WARNING",
            "MAX_CONCURRENT_EXECUTIONS": str(SLOTS),
            "ARTIFACTS_DIR": str(self.root / "artifacts"),
            "WORK_DIR": str(self.root / "work"),
        }
        argv = [sys.executable, "-P", str(NOOP_SERVER), "--port", str(self.port)]
        if not self.worker:
            argv.append("--no-worker")
        with (self.root / "server.log").open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._await_health()
        self.api.login()
        self._db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)

    def _await_health(self) -> None:
        until = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < until:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited at start:\n{self.log_tail()}")
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                probe.request("GET", f"{API}/health")
                if probe.getresponse().status == 200:
                    probe.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"the server did not answer within {SERVER_START_TIMEOUT_S} s")

    def log_tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        self.api.close()
        if self._db is not None:
            self._db.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # -- reading the file, which costs the server nothing --

    def scalar(self, sql: str, *params: Any) -> Any:
        assert self._db is not None
        return self._db.execute(sql, params).fetchone()[0]

    def wait_done(self, ids: list[int], timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Until every execution in `ids` is completed; each must have passed."""
        marks = ",".join("?" * len(ids))
        sql = f"SELECT count(*) FROM executions WHERE id IN ({marks}) AND status = 'completed'"
        until = time.monotonic() + timeout_s
        while self.scalar(sql, *ids) < len(ids):
            if time.monotonic() > until:
                raise BenchError(f"executions {ids[:5]}... did not complete in {timeout_s} s")
            time.sleep(DONE_POLL_S)
        failed = self.scalar(
            f"SELECT count(*) FROM executions WHERE id IN ({marks}) AND result != 'pass'", *ids
        )
        if failed:
            raise BenchError(f"{failed} of executions {ids[:5]}... did not pass")

    def wait_drained(self, timeout_s: float) -> None:
        """Until nothing is pending or running."""
        until = time.monotonic() + timeout_s
        sql = "SELECT count(*) FROM executions WHERE status IN ('pending', 'running')"
        while self.scalar(sql):
            if time.monotonic() > until:
                raise BenchError(f"the queue did not drain in {timeout_s} s")
            time.sleep(DRAIN_POLL_S)

    # -- through the API --

    def create_case(self, title: str, **fields: Any) -> int:
        body = {"title": title, "runner": "noop", **fields}
        return int(self.api.call("POST", "/tests", body)["id"])

    def run(self, case_id: int) -> int:
        return int(self.api.call("POST", f"/executions/tests/{case_id}/run")["id"])

    def bulk(self, ids: list[int]) -> list[int]:
        out = self.api.call("POST", "/executions/bulk", {"test_case_ids": ids})
        return [int(item["id"]) for item in out["executions"]]


@contextlib.contextmanager
def server(*, worker: bool = True) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="testqueue-bench-") as folder:
        srv = Server(Path(folder), worker=worker)
        try:
            srv.start()
            yield srv
        except BaseException:
            sys.stderr.write(f"server log:\n{srv.log_tail()}\n")
            raise
        finally:
            srv.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- statistics ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def timed_ms(action: Callable[[], None], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        action()
        out.append((time.perf_counter() - start) * 1000)
    return out


def expect(status_and_body: tuple[int, bytes], status: int = 200) -> None:
    got, body = status_and_body
    if got != status:
        raise BenchError(f"expected {status}, got {got}: {body[:300]!r}")


def wall_seconds(stored: str) -> float:
    """A datetime as SQLite holds it (naive means UTC) as a Unix time."""
    value = datetime.fromisoformat(stored)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


# -- the figures --------------------------------------------------------------------------
# Each returns {metric key: value} for one repetition, on its own server and file.


def noop_run_ms(srv: Server, case_id: int) -> float:
    """Run call to the runner's first instruction, on the same monotonic clock."""
    start = time.monotonic_ns()
    execution_id = srv.run(case_id)
    srv.wait_done([execution_id])
    stamp = int(srv.api.text(f"/executions/{execution_id}/log"))
    return (stamp - start) / 1e6


def bench_overhead(plan: Plan) -> dict[str, float]:
    with server() as srv:
        case_id = srv.create_case("noop")
        for _ in range(WARMUP_RUNS):
            noop_run_ms(srv, case_id)
        lat = [noop_run_ms(srv, case_id) for _ in range(plan.overhead_runs)]
    return {"overhead_p50": percentile(lat, 50), "overhead_p99": percentile(lat, 99),
            "overhead_max": max(lat)}  # fmt: skip


def ramp_ms(srv: Server, case_ids: list[int]) -> tuple[float, float]:
    """(first start, SLOTS-th start) after a bulk call of RAMP_RUNS runs, in ms."""
    start = time.monotonic_ns()
    ids = srv.bulk(case_ids)
    srv.wait_done(ids)
    stamps = sorted(int(srv.api.text(f"/executions/{i}/log")) for i in ids)
    return (stamps[0] - start) / 1e6, (stamps[SLOTS - 1] - start) / 1e6


def bench_rampup(plan: Plan) -> dict[str, float]:
    with server() as srv:
        case_ids = [srv.create_case(f"noop {n}") for n in range(RAMP_RUNS)]
        for _ in range(3):
            ramp_ms(srv, case_ids)
        rounds = [ramp_ms(srv, case_ids) for _ in range(plan.ramp_rounds)]
    return {
        "rampup": statistics.median(r[1] for r in rounds),
        "rampup_first": statistics.median(r[0] for r in rounds),
    }


def bench_throughput(plan: Plan) -> dict[str, float]:
    with server() as srv:
        case_id = srv.create_case("noop")
        srv.wait_done(srv.bulk([case_id] * 50))
        start = time.time()
        ids: list[int] = []
        for offset in range(0, plan.throughput_runs, BULK_MAX):
            size = min(BULK_MAX, plan.throughput_runs - offset)
            ids += srv.bulk([case_id] * size)
        enqueued = time.time()
        srv.wait_drained(timeout_s=600)
        srv.wait_done([ids[0], ids[-1]])
        done = srv.scalar(
            "SELECT count(*) FROM executions WHERE id >= ? AND status = 'completed' "
            "AND result = 'pass'",
            ids[0],
        )
        if done != plan.throughput_runs:
            raise BenchError(f"{done} of {plan.throughput_runs} executions passed")
        end = wall_seconds(srv.scalar("SELECT max(completed_at) FROM executions"))
    return {
        "throughput": plan.throughput_runs / (end - start),
        "throughput_enqueue_s": enqueued - start,
        "throughput_total_s": end - start,
    }


def fill_line(srv: Server, case_id: int, count: int) -> list[int]:
    ids: list[int] = []
    for offset in range(0, count, BULK_MAX):
        ids += srv.bulk([case_id] * min(BULK_MAX, count - offset))
    return ids


def position_ms(srv: Server, execution_id: int, expected: int, samples: int) -> list[float]:
    detail = srv.api.call("GET", f"/executions/{execution_id}")
    if detail["queue_position"] != expected:
        raise BenchError(f"execution {execution_id}: position {detail['queue_position']}")
    path = f"/executions/{execution_id}"
    return timed_ms(lambda: expect(srv.api.send("GET", path)), samples)


def bench_status(plan: Plan) -> dict[str, float]:
    with server() as srv:
        srv.api.call("POST", "/executions/queue/pause")
        case_id = srv.create_case("noop")
        start = time.perf_counter()
        ids = fill_line(srv, case_id, plan.pending)
        fill_s = time.perf_counter() - start
        page = srv.api.call("GET", "/executions/queue/status")
        if page["queued_count"] != plan.pending or len(page["queue"]) != 50:
            raise BenchError(f"status counts {page['queued_count']} queued")
        status_ms = timed_ms(
            lambda: expect(srv.api.send("GET", "/executions/queue/status")), plan.read_samples
        )
        middle = len(ids) // 2
        near_end = len(ids) - 10
        middle_ms = position_ms(srv, ids[middle], middle + 1, plan.read_samples)
        end_ms = position_ms(srv, ids[near_end], near_end + 1, plan.read_samples)
    return {
        "status_page": statistics.median(status_ms),
        "position_middle": statistics.median(middle_ms),
        "position_end": statistics.median(end_ms),
        "status_fill_rate": plan.pending / fill_s,
    }


def enqueue_rate(srv: Server, case_id: int, calls: int) -> float:
    path = f"/executions/tests/{case_id}/run"
    start = time.perf_counter()
    for _ in range(calls):
        expect(srv.api.send("POST", path), 201)
    return calls / (time.perf_counter() - start)


def bench_enqueue(plan: Plan) -> dict[str, float]:
    with server() as srv:
        case_id = srv.create_case("noop")
        enqueue_rate(srv, case_id, 50)
        srv.wait_drained(timeout_s=60)
        live = enqueue_rate(srv, case_id, plan.enqueue_calls)
        srv.wait_drained(timeout_s=600)
        srv.api.call("POST", "/executions/queue/pause")
        paused = enqueue_rate(srv, case_id, plan.enqueue_calls)
    return {"enqueue": live, "enqueue_paused": paused}


def command_run_ms(srv: Server, case_id: int) -> float:
    start = time.time()
    execution_id = srv.run(case_id)
    srv.wait_done([execution_id])
    said = srv.api.text(f"/executions/{execution_id}/log").strip()
    return (float(said.replace(",", ".")) - start) * 1000


def bench_command(plan: Plan) -> dict[str, float]:
    with server() as srv:
        case_id = srv.create_case("echo start", runner="command", command=COMMAND)
        for _ in range(5):
            command_run_ms(srv, case_id)
        lat = [command_run_ms(srv, case_id) for _ in range(plan.command_runs)]
    return {"command_p50": percentile(lat, 50), "command_p99": percentile(lat, 99)}


# -- reporting ----------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    target: float | None = None  # None: shown for context, no target
    at_least: bool = False  # the target is a floor (rates), not a ceiling (latencies)
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.at_least else '<='} {_number(self.target)} {self.unit}"

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        return self.median >= self.target if self.at_least else self.median <= self.target


@dataclass
class Figure:
    name: str
    title: str
    run: Callable[[Plan], dict[str, float]]
    metrics: list[Metric]
    describe: Callable[[Plan], str]


def figures() -> list[Figure]:
    return [
        Figure("overhead", "1. queue overhead, run call -> noop runner's first instruction",
               bench_overhead,
               [Metric("overhead_p50", "overhead p50", "ms", 2.5),
                Metric("overhead_p99", "overhead p99", "ms", 10.0),
                Metric("overhead_max", "overhead max", "ms")],
               lambda p: f"{p.overhead_runs} sequential runs, free slot, after {WARMUP_RUNS} "
                         "warm-up runs"),
        Figure("rampup", f"2. ramp-up, bulk call of {RAMP_RUNS} -> {SLOTS} runs started",
               bench_rampup,
               [Metric("rampup", f"ramp-up to {SLOTS} started", "ms", 8.0),
                Metric("rampup_first", "first run started", "ms")],
               lambda p: f"median of {p.ramp_rounds} bulk calls, {SLOTS} slots, idle queue"),
        Figure("throughput", "3. engine throughput, noop runner, 5 slots", bench_throughput,
               [Metric("throughput", "throughput", "executions/s", 2000.0, at_least=True),
                Metric("throughput_enqueue_s", "time to enqueue all", "s"),
                Metric("throughput_total_s", "first enqueue -> last completed", "s")],
               lambda p: f"{p.throughput_runs} executions in bulk calls of {BULK_MAX}, "
                         "first enqueue -> last completed_at"),
        Figure("status", "4. queue status and positions with a long line", bench_status,
               [Metric("status_page", "GET queue/status first page", "ms", 25.0),
                Metric("position_middle", "GET executions/{id}, middle of line", "ms", 5.0),
                Metric("position_end", "GET executions/{id}, near the end", "ms", 5.0),
                Metric("status_fill_rate", "bulk enqueue into the paused line", "executions/s")],
               lambda p: f"{p.pending} pending (queue paused), medians of {p.read_samples} "
                         "requests each"),
        Figure("enqueue", "5. enqueue through HTTP, one client, sequential run calls",
               bench_enqueue,
               [Metric("enqueue", "run calls, worker running them", "req/s", 500.0,
                       at_least=True),
                Metric("enqueue_paused", "run calls, queue paused", "req/s")],
               lambda p: f"{p.enqueue_calls} POST .../run on one keep-alive connection"),
        Figure("command", "6. command test, run call -> its first instruction", bench_command,
               [Metric("command_p50", "command start p50", "ms", 15.0),
                Metric("command_p99", "command start p99", "ms")],
               lambda p: f"{p.command_runs} sequential runs of {' '.join(COMMAND)!r}, "
                         "free slot, vs client time.time()"),
    ]  # fmt: skip


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def machine() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("uvicorn", "uvloop", "httptools", "sqlalchemy", "aiosqlite", "fastapi"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return [
        f"machine: {platform.node()}, {platform.system()} {platform.release()}, {cpu}",
        f"nproc: {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()})",
        f"python: {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}",
        f"server: {', '.join(versions)}",
        "client: http.client, one keep-alive connection, in this process; completion is "
        "watched by reading the SQLite file read-only",
    ]


def run_figure(figure: Figure, plan: Plan) -> None:
    print(f"\n{figure.title}\n  ({figure.describe(plan)}; {plan.reps} repetition(s), "
          "each on a fresh server and database)", flush=True)  # fmt: skip
    for rep in range(1, plan.reps + 1):
        values = figure.run(plan)
        for metric in figure.metrics:
            metric.values.append(values[metric.key])
        shown = ", ".join(f"{m.label} {_number(values[m.key])} {m.unit}" for m in figure.metrics)
        print(f"  rep {rep}/{plan.reps}: {shown}", flush=True)
    for metric in figure.metrics:
        verdict = {True: "  met", False: "  MISSED", None: ""}[metric.met]
        print(f"  => {metric.label}: {_number(metric.median)} {metric.unit} "
              f"(median; target {metric.target_text}){verdict}")  # fmt: skip


def print_table(chosen: list[Figure]) -> None:
    rows = [(m.label, f"{_number(m.median)} {m.unit}", m.target_text, "yes" if m.met else "NO")
            for f in chosen for m in f.metrics if m.target is not None and m.values]  # fmt: skip
    if not rows:
        return
    widths = [max(len(r[i]) for r in [("figure", "median", "target", "met"), *rows])
              for i in range(4)]  # fmt: skip
    print("\nSummary (SQLite, medians of the repetitions)")
    for row in [("figure", "median", "target", "met"), *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [f.name for f in figures()]
    parser = argparse.ArgumentParser(description="testqueue queue benchmarks (SQLite, HTTP).")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, less work")
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(names)}",
    )  # fmt: skip
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5, quick 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**asdict(plan), "reps": args.reps})
    chosen = [f for f in figures() if not args.only or f.name in args.only]
    print("testqueue queue benchmarks" + (" (--quick: smaller sizes)" if args.quick else ""))
    for line in machine():
        print(f"  {line}")
    failed = []
    for figure in chosen:
        try:
            run_figure(figure, plan)
        except BenchError as exc:
            print(f"  could not measure: {exc}", flush=True)
            failed.append(figure.name)
    print_table(chosen)
    if args.json:
        data = {m.key: {"median": m.median, "values": m.values, "unit": m.unit,
                        "target": m.target, "met": m.met}
                for f in chosen for m in f.metrics if m.values}  # fmt: skip
        args.json.write_text(json.dumps({"plan": asdict(plan), "figures": data}, indent=2))
    if failed:
        print(f"\nnot measured: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
