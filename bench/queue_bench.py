"""Queue benchmarks on SQLite, through HTTP, against a real server process.

    .venv/bin/python bench/queue_bench.py [--quick] [--only NAME ...] [--reps N] [--json FILE]

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
# How often a client waiting for runs looks; the latency figures come from
# stamps, not from these. Draining is coarser: it takes CPU from the server.
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


# -- CPU accounting -----------------------------------------------------------------------
# Other work on a small machine inflates latencies; each repetition reports how much
# CPU others took meanwhile, and the server's own CPU per operation, which load
# inflates far less than wall time.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_SHARE = 0.25  # others may use this share of the machine before a repetition starts
QUIET_WAIT_S = 20.0
QUIET_WINDOW_S = 0.5


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_busy_s() -> float:
    """CPU time all processes have used since boot (every field of /proc/stat but idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Usage:
    """Where the machine's CPU went during one repetition."""

    server_cpu_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _busy0: float = field(default_factory=machine_busy_s)
    _own0: float = field(default_factory=own_cpu_s)

    def others_share(self) -> float:
        """CPU used by neither the server nor this client, as a share of all CPUs."""
        wall = time.monotonic() - self.started
        others = machine_busy_s() - self._busy0 - (own_cpu_s() - self._own0) - self.server_cpu_s
        return min(1.0, max(0.0, others / (wall * CPUS)))


CPUS = len(os.sched_getaffinity(0))


def wait_quiet() -> float:
    """Wait (a while, not forever) until others use little of the machine; their share."""
    until = time.monotonic() + QUIET_WAIT_S
    while True:
        busy0, own0 = machine_busy_s(), own_cpu_s()
        time.sleep(QUIET_WINDOW_S)
        busy = machine_busy_s() - busy0 - (own_cpu_s() - own0)
        share = min(1.0, busy / (QUIET_WINDOW_S * CPUS))
        if share <= QUIET_SHARE or time.monotonic() > until:
            return share


# -- the server ---------------------------------------------------------------------------


def server_env(root: Path, database_url: str, slots: int) -> dict[str, str]:
    """The environment of a benchmark's server or worker process."""
    (root / "work").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "TESTQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "WARNING",
        "MAX_CONCURRENT_EXECUTIONS": str(slots),
        "SHUTDOWN_GRACE": "2",
        "ARTIFACTS_DIR": str(root / "artifacts"),
        "WORK_DIR": str(root / "work"),
    }


class Server:
    """A noop_server process on a fresh SQLite file, its API and a read-only view of its file."""

    drain_poll_s = DRAIN_POLL_S

    def __init__(
        self,
        root: Path,
        usage: Usage,
        *,
        worker: bool = True,
        database_url: str | None = None,
        slots: int = SLOTS,
    ) -> None:
        self.root = root
        self.usage = usage
        self.db_path = root / "bench.db"
        self.env = server_env(root, database_url or f"sqlite:///{self.db_path}", slots)
        self.port = _free_port()
        self.worker = worker
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Api(self.port)
        self._db: sqlite3.Connection | None = None
        self.extra_args: list[str] = []  # more of noop_server.py's options

    def start(self) -> None:
        argv = [sys.executable, str(NOOP_SERVER), "--port", str(self.port), *self.extra_args]
        if not self.worker:
            argv.append("--no-worker")
        with (self.root / "server.log").open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._await_health()
        self.api.login()
        self.open_reader()

    def open_reader(self) -> None:
        """A connection of the client's own for `scalar`: the SQLite file, read-only (on
        PostgreSQL none: nothing but the server reads the database, unless a subclass does)."""
        if self.env["DATABASE_URL"].startswith("sqlite"):
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
        self.usage.server_cpu_s += self.cpu_s()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu_s(self) -> float:
        """CPU time the server process has used so far, all threads, user and system."""
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    # -- reading the file, which costs the server nothing --

    def scalar(self, sql: str, *params: Any) -> Any:
        assert self._db is not None
        return self._db.execute(sql, params).fetchone()[0]

    def ids_in(self, ids: list[int]) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause naming these executions, and its parameters."""
        return f"id IN ({','.join('?' * len(ids))})", tuple(ids)

    def wait_done(self, ids: list[int], timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Until every execution in `ids` is completed; each must have passed."""
        named, params = self.ids_in(ids)
        sql = f"SELECT count(*) FROM executions WHERE {named} AND status = 'completed'"
        until = time.monotonic() + timeout_s
        while self.scalar(sql, *params) < len(ids):
            if time.monotonic() > until:
                raise BenchError(f"executions {ids[:5]}... did not complete in {timeout_s} s")
            time.sleep(DONE_POLL_S)
        failed = self.scalar(
            f"SELECT count(*) FROM executions WHERE {named} AND result != 'pass'", *params
        )
        if failed:
            raise BenchError(f"{failed} of executions {ids[:5]}... did not pass")

    def wait_drained(self, timeout_s: float) -> None:
        """Until nothing is pending or running."""
        until = time.monotonic() + timeout_s
        sql = "SELECT count(*) FROM executions WHERE status IN ('pending', 'running')"
        while self.scalar(sql):
            if time.monotonic() > until:
                left = self.scalar(sql)
                raise BenchError(f"the queue did not drain in {timeout_s} s ({left} left)")
            time.sleep(self.drain_poll_s)

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
def server(usage: Usage, *, worker: bool = True) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="testqueue-bench-") as folder:
        srv = Server(Path(folder), usage, worker=worker)
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


def bench_overhead(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
        case_id = srv.create_case("noop")
        for _ in range(WARMUP_RUNS):
            noop_run_ms(srv, case_id)
        cpu0 = srv.cpu_s()
        lat = [noop_run_ms(srv, case_id) for _ in range(plan.overhead_runs)]
        cpu_ms = (srv.cpu_s() - cpu0) * 1000 / plan.overhead_runs
    return {
        "overhead_p50": percentile(lat, 50),
        "overhead_p99": percentile(lat, 99),
        "overhead_max": max(lat),
        "overhead_cpu": cpu_ms,
    }


def ramp_ms(srv: Server, case_ids: list[int]) -> tuple[float, float]:
    """(first start, SLOTS-th start) after a bulk call of RAMP_RUNS runs, in ms."""
    start = time.monotonic_ns()
    ids = srv.bulk(case_ids)
    srv.wait_done(ids)
    stamps = sorted(int(srv.api.text(f"/executions/{i}/log")) for i in ids)
    return (stamps[0] - start) / 1e6, (stamps[SLOTS - 1] - start) / 1e6


def bench_rampup(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
        case_ids = [srv.create_case(f"noop {n}") for n in range(RAMP_RUNS)]
        for _ in range(3):
            ramp_ms(srv, case_ids)
        rounds = [ramp_ms(srv, case_ids) for _ in range(plan.ramp_rounds)]
    return {
        "rampup": statistics.median(r[1] for r in rounds),
        "rampup_first": statistics.median(r[0] for r in rounds),
    }


def bench_throughput(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
        case_id = srv.create_case("noop")
        srv.wait_done(srv.bulk([case_id] * 50))
        cpu0 = srv.cpu_s()
        start = time.time()
        ids = fill_line(srv, case_id, plan.throughput_runs)
        enqueued = time.time()
        srv.wait_drained(timeout_s=600)
        cpu_ms = (srv.cpu_s() - cpu0) * 1000 / plan.throughput_runs
        passed = srv.scalar(
            "SELECT count(*) FROM executions WHERE id >= ? AND status = 'completed' "
            "AND result = 'pass'",
            ids[0],
        )
        if passed != plan.throughput_runs:
            raise BenchError(f"{passed} of {plan.throughput_runs} executions passed")
        end = wall_seconds(srv.scalar("SELECT max(completed_at) FROM executions"))
    return {
        "throughput": plan.throughput_runs / (end - start),
        "throughput_enqueue_s": enqueued - start,
        "throughput_total_s": end - start,
        "throughput_cpu": cpu_ms,
    }


def fill_line(srv: Server, case_id: int, count: int) -> list[int]:
    """Queue `count` runs of one test case in bulk calls of BULK_MAX."""
    ids: list[int] = []
    for offset in range(0, count, BULK_MAX):
        ids += srv.bulk([case_id] * min(BULK_MAX, count - offset))
    return ids


def position_ms(srv: Server, execution_id: int, expected: int, samples: int) -> list[float]:
    detail = srv.api.call("GET", f"/executions/{execution_id}")
    if detail["queue_position"] != expected:
        raise BenchError(f"execution {execution_id} is at {detail['queue_position']}")
    path = f"/executions/{execution_id}"
    return timed_ms(lambda: expect(srv.api.send("GET", path)), samples)


def status_ms(srv: Server, pending: int, samples: int) -> list[float]:
    page = srv.api.call("GET", "/executions/queue/status")
    if page["queued_count"] != pending or len(page["queue"]) != min(50, pending):
        raise BenchError(f"status says {page['queued_count']} queued, {pending} expected")
    return timed_ms(lambda: expect(srv.api.send("GET", "/executions/queue/status")), samples)


def bench_status(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
        srv.api.call("POST", "/executions/queue/pause")
        case_id = srv.create_case("noop")
        start = time.perf_counter()
        ids = fill_line(srv, case_id, plan.pending)
        fill_s = time.perf_counter() - start
        cpu0 = srv.cpu_s()
        page_ms = status_ms(srv, plan.pending, plan.read_samples)
        cpu_ms = (srv.cpu_s() - cpu0) * 1000 / (plan.read_samples + 1)
        middle, near_end = len(ids) // 2, len(ids) - 10
        middle_ms = position_ms(srv, ids[middle], middle + 1, plan.read_samples)
        end_ms = position_ms(srv, ids[near_end], near_end + 1, plan.read_samples)
    return {
        "status_page": statistics.median(page_ms),
        "status_cpu": cpu_ms,
        "position_middle": statistics.median(middle_ms),
        "position_end": statistics.median(end_ms),
        "status_fill_rate": plan.pending / fill_s,
    }


def enqueue_rate(srv: Server, case_id: int, calls: int) -> tuple[float, float]:
    """(run calls per second, server CPU ms per call) over `calls` sequential run calls."""
    path = f"/executions/tests/{case_id}/run"
    cpu0 = srv.cpu_s()
    start = time.perf_counter()
    for _ in range(calls):
        expect(srv.api.send("POST", path), 201)
    rate = calls / (time.perf_counter() - start)
    return rate, (srv.cpu_s() - cpu0) * 1000 / calls


def bench_enqueue(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
        case_id = srv.create_case("noop")
        enqueue_rate(srv, case_id, 50)
        srv.wait_drained(timeout_s=60)
        live, live_cpu = enqueue_rate(srv, case_id, plan.enqueue_calls)
        srv.wait_drained(timeout_s=600)
        srv.api.call("POST", "/executions/queue/pause")
        paused, paused_cpu = enqueue_rate(srv, case_id, plan.enqueue_calls)
    return {
        "enqueue": live,
        "enqueue_cpu": live_cpu,
        "enqueue_paused": paused,
        "enqueue_paused_cpu": paused_cpu,
    }


def command_run_ms(srv: Server, case_id: int) -> float:
    """Run call (client wall clock) to the command's own EPOCHREALTIME, in ms."""
    start = time.time()
    execution_id = srv.run(case_id)
    srv.wait_done([execution_id])
    said = srv.api.text(f"/executions/{execution_id}/log").strip()
    return (float(said.replace(",", ".")) - start) * 1000


def bench_command(plan: Plan, usage: Usage) -> dict[str, float]:
    with server(usage) as srv:
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
    target: float | None = None  # None: context only, no target
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
    about: str
    run: Callable[[Plan, Usage], dict[str, float]]
    metrics: list[Metric]
    others: list[float] = field(default_factory=list)


def figures(plan: Plan) -> list[Figure]:
    cpu = "ms CPU"
    return [
        Figure(
            "overhead",
            "1. queue overhead: run call -> noop runner's first instruction",
            f"{plan.overhead_runs} sequential runs, each with a free slot, after "
            f"{WARMUP_RUNS} warm-up runs",
            bench_overhead,
            [
                Metric("overhead_p50", "overhead p50", "ms", 2.5),
                Metric("overhead_p99", "overhead p99", "ms", 10.0),
                Metric("overhead_max", "overhead max", "ms"),
                Metric("overhead_cpu", "server CPU per run (run call, dispatch, log read)", cpu),
            ],
        ),
        Figure(
            "rampup",
            f"2. ramp-up: bulk call of {RAMP_RUNS} -> {SLOTS} runs started",
            f"median of {plan.ramp_rounds} bulk calls into an idle queue, {SLOTS} slots",
            bench_rampup,
            [
                Metric("rampup", f"ramp-up to {SLOTS} started", "ms", 8.0),
                Metric("rampup_first", "first run started", "ms"),
            ],
        ),
        Figure(
            "throughput",
            f"3. engine throughput: noop runner, {SLOTS} slots",
            f"{plan.throughput_runs} executions in bulk calls of {BULK_MAX}, "
            "first enqueue -> last completed_at",
            bench_throughput,
            [
                Metric("throughput", "throughput", "executions/s", 2000.0, at_least=True),
                Metric("throughput_enqueue_s", "time to enqueue all", "s"),
                Metric("throughput_total_s", "first enqueue -> last completed", "s"),
                Metric("throughput_cpu", "server CPU per execution", cpu),
            ],
        ),
        Figure(
            "status",
            "4. queue status and positions in a long line",
            f"{plan.pending} pending (queue paused), median of {plan.read_samples} requests each",
            bench_status,
            [
                Metric("status_page", "GET queue/status, first page", "ms", 25.0),
                Metric("status_cpu", "server CPU per status request", cpu),
                Metric("position_middle", "GET executions/{id}, middle of the line", "ms", 5.0),
                Metric("position_end", "GET executions/{id}, near the end", "ms", 5.0),
                Metric("status_fill_rate", "bulk enqueue into the paused line", "executions/s"),
            ],
        ),
        Figure(
            "enqueue",
            "5. enqueue through HTTP: one client, sequential run calls",
            f"{plan.enqueue_calls} POST .../run on one keep-alive connection",
            bench_enqueue,
            [
                Metric("enqueue", "run calls, worker running them", "req/s", 500.0, True),
                Metric("enqueue_cpu", "server CPU per run call (and its run)", cpu),
                Metric("enqueue_paused", "run calls, queue paused", "req/s"),
                Metric("enqueue_paused_cpu", "server CPU per run call, paused", cpu),
            ],
        ),
        Figure(
            "command",
            "6. command test: run call -> the command's first instruction",
            f"{plan.command_runs} sequential runs of {' '.join(COMMAND)!r}, free slot, "
            "against the client's time.time()",
            bench_command,
            [
                Metric("command_p50", "command start p50", "ms", 15.0),
                Metric("command_p99", "command start p99", "ms"),
            ],
        ),
    ]


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
    for package in ("uvicorn", "uvloop", "httptools", "fastapi", "sqlalchemy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    load = Path("/proc/loadavg").read_text().split()[:3]
    return [
        f"machine: {platform.system()} {platform.release()}, {cpu}, load average {' '.join(load)}",
        f"nproc: {CPUS} (cpu_count {os.cpu_count()})",
        f"python: {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}",
        f"server: bench/noop_server.py, {', '.join(versions)}",
        "client: http.client, one keep-alive connection; completion is watched by reading "
        "the SQLite file read-only",
    ]


def run_figure(figure: Figure, plan: Plan) -> None:
    print(f"\n{figure.title}\n  {figure.about}; {plan.reps} repetition(s)", flush=True)
    for rep in range(1, plan.reps + 1):
        before = wait_quiet()
        usage = Usage()
        values = figure.run(plan, usage)
        figure.others.append(usage.others_share())
        for metric in figure.metrics:
            metric.values.append(values[metric.key])
        shown = ", ".join(f"{m.label} {_number(values[m.key])} {m.unit}" for m in figure.metrics)
        print(
            f"  rep {rep}: {shown}\n"
            f"         [others' CPU: {before:.0%} of {CPUS} CPUs before, "
            f"{figure.others[-1]:.0%} during]",
            flush=True,
        )
    for metric in figure.metrics:
        verdict = {True: "  met", False: "  MISSED", None: ""}[metric.met]
        print(
            f"  => {metric.label}: {_number(metric.median)} {metric.unit} "
            f"(median; target {metric.target_text}){verdict}"
        )


def print_table(chosen: list[Figure]) -> None:
    header = ("figure", "median", "target", "met")
    rows = [
        (m.label, f"{_number(m.median)} {m.unit}", m.target_text, "yes" if m.met else "NO")
        for f in chosen
        for m in f.metrics
        if m.target is not None and m.values
    ]
    if not rows:
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("\nSummary (SQLite; medians of the repetitions)")
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    others = [share for f in chosen for share in f.others]
    if others:
        print(
            f"  other processes used {statistics.median(others):.0%} of the {CPUS} CPUs "
            f"(median over repetitions; max {max(others):.0%})"
        )


def write_json(path: Path, plan: Plan, chosen: list[Figure]) -> None:
    data = {
        "plan": asdict(plan),
        "machine": machine(),
        "figures": {
            f.name: {
                "others_cpu_share": f.others,
                "metrics": {
                    m.key: {"median": m.median, "values": m.values, "unit": m.unit,
                            "target": m.target, "met": m.met}
                    for m in f.metrics
                    if m.values
                },
            }
            for f in chosen
        },
    }  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n")


NAMES = ("overhead", "rampup", "throughput", "status", "enqueue", "command")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="testqueue queue benchmarks (SQLite, HTTP).")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, less work")
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5, quick 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**asdict(plan), "reps": args.reps})
    chosen = [f for f in figures(plan) if not args.only or f.name in args.only]
    print("testqueue queue benchmarks" + (" (--quick: 1 repetition, smaller sizes)" * args.quick))
    for line in machine():
        print(f"  {line}")
    missing = []
    for figure in chosen:
        try:
            run_figure(figure, plan)
        except BenchError as exc:
            print(f"  could not measure: {exc}", flush=True)
            missing.append(figure.name)
    print_table(chosen)
    if args.json:
        write_json(args.json, plan, chosen)
    if missing:
        print(f"\nnot measured: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
