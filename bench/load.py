"""Capacity under a team's mixed load: how many requests a second the server answers in time.

    .venv/bin/python bench/load.py [--rates 100,200,...] [--step-seconds 10]
        [--postgres URL] [--workers N] [--dashboards 100] [--closed 1,10,50]

A real server (bench/noop_server.py, as in queue_bench: the real app, and a
`noop` runner that passes at once, so runs spawn no processes) with 5 slots
and LOG_LEVEL=WARNING, on a fresh SQLite file, or with `--postgres URL` on a
new database of that PostgreSQL server; `--workers N` runs it as N processes
on one port. Set up as admin: 50 member accounts, each signed in through
`POST /auth/login`, and a handful of noop test cases. Sign-in throttling
counts failed sign-ins only, so these 50 good ones from loopback need no
change to LOGIN_MAX_FAILURES_*.

The load is an open loop: requests leave on a fixed schedule (evenly spaced
at the offered rate) whether or not earlier ones have been answered, and each
latency runs from its scheduled time, so a request waiting in the client for
a free connection counts. Each arrival picks one of the 50 users at random and
one request of the mix:

    run 30 %, status 15 %, detail 15 %, reprioritise 20 %, cancel 15 %,
    bulk 3 %, others' runs 2 %

409 to reprioritising or cancelling a run that has started or ended meanwhile
is a legitimate race: answered, but tallied apart. 5xx, other unexpected
statuses, dropped connections and answers slower than 5 s are errors. All the
while, 100 dashboards keep the live queue page open (`GET /events/queue`,
signed in through the dashboard's own form, a few users' sessions shared
among them) and the events they receive are counted.

The rate steps up (each step starts on an empty line: a 2 s warm-up, then the
measured window). The capacity is the highest step answered at its offered
rate (within 5 %) with p99 under 100 ms and no errors; stepping stops after a
step that misses by a wide margin. For each step the database then says how
long the runs queued in it waited for a slot (started_at - queued_at), and
/proc how much CPU the server (all its processes), the database's PostgreSQL
backends, the client and everything else used per answered request.

`--closed N,...` instead runs a closed loop: N clients, each sending the mix
back to back, reporting the throughput for each N, which adding clients
should never lower.

The client is one asyncio process (uvloop) with a small HTTP/1.1 keep-alive
client on asyncio streams (up to 6 connections per user, like a browser), so
it takes little of the 2 cores it shares with the server; it reports its own
lag behind the schedule, and says so when it, not the server, set the pace.
A report, not a test: it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import psycopg
import uvloop

import queue_bench as qb
import workers_bench
from testqueue.web.session import CSRF_FIELD, SESSION_COOKIE, SIGNIN_COOKIE

USERS = 50
CASES = 8
MEMBER_PASSWORD = "bench-member-password"
DASHBOARDS = 100
DASHBOARD_USERS = 5  # dashboard sessions, shared among the streams
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800)
STEP_S = 10.0
WARMUP_S = 2.0
REQUEST_TIMEOUT_S = 5.0
POOL_PER_USER = 6  # connections per user, as a browser keeps per host
RECENT_RUNS = 20  # own runs a user remembers for detail, reprioritise and cancel
BULK_SIZES = (2, 5)
TARGET_P99_MS = 100.0
RATE_TOLERANCE = 0.05
# A step misses widely (and stepping stops) below this share of the offered rate,
# above this p99, or with more than this share of errors.
WIDE_RATE_SHARE = 0.8
WIDE_P99_MS = 1000.0
WIDE_ERROR_SHARE = 0.01
# The client is behind its schedule when its p99 lag is over this.
CLIENT_LAG_MS = 10.0
SSE_RECONNECT_S = 1.0
# uvloop rounds a timer to the nearest ms, so a sleep may end up to 0.5 ms early;
# sleeping this much longer means no request leaves before it is due.
TIMER_SLACK_S = 0.0005
SAMPLE_BODY = 200
# Before a step the line may take this long to empty, so that no step inherits another's.
DRAIN_WAIT_S = 10.0
BACKEND_SAMPLE_S = 0.2

MIX = {
    "run": 30,
    "status": 15,
    "detail": 15,
    "reprioritise": 20,
    "cancel": 15,
    "bulk": 3,
    "others": 2,
}
ROUTE_LABELS = {
    "run": "POST /executions/tests/{id}/run",
    "status": "GET /executions/queue/status",
    "detail": "GET /executions/{id}",
    "reprioritise": "PATCH /executions/{id}",
    "cancel": "POST /executions/{id}/cancel",
    "bulk": "POST /executions/bulk",
    "others": "GET /executions?user_id=",
}
OK_STATUS = {
    "run": (200, 201),
    "status": (200,),
    "detail": (200,),
    "reprioritise": (200,),
    "cancel": (200,),
    "bulk": (201,),
    "others": (200,),
}
# A run that started or ended between the user's look and the request.
RACE_STATUS = {"reprioritise": (409,), "cancel": (409,)}
NEEDS_OWN_RUN = ("detail", "reprioritise", "cancel")
ROUTES = tuple(MIX)
# What a dropped connection or a garbled answer raises.
STREAM_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
CUMULATIVE = tuple(sum(list(MIX.values())[: i + 1]) for i in range(len(MIX)))


# -- the HTTP client ----------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection: requests out, Content-Length answers in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = asyncio.get_running_loop().time()

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def stale(self) -> bool:
        """Idle long enough that the server may be closing it (uvicorn: after 5 s)."""
        return asyncio.get_running_loop().time() - self.used > qb.IDLE_RECONNECT_S

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Status, body, and whether the connection may be used again."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, keep = 0, True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                keep = value.strip().lower() != b"close"
            elif name == b"transfer-encoding":
                raise ValueError("a chunked answer where Content-Length was expected")
        body = await self.reader.readexactly(length) if length else b""
        self.used = asyncio.get_running_loop().time()
        return status, body, keep

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Up to `size` connections of one user, the most recently used handed out first.

    A slot holds a connection or None (open one when needed); a request that
    fails or is cut off by its deadline closes its connection and frees the slot.
    """

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.free: asyncio.LifoQueue[Conn | None] = asyncio.LifoQueue()
        for _ in range(size):
            self.free.put_nowait(None)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            if conn is not None and conn.stale():
                conn.close()
                conn = None
            if conn is None:
                conn = await Conn.open(self.port)
            status, body, keep = await conn.exchange(request)
        except BaseException:
            if conn is not None:
                conn.close()
            self.free.put_nowait(None)
            raise
        if not keep:
            conn.close()
        self.free.put_nowait(conn if keep else None)
        return status, body

    def close(self) -> None:
        while not self.free.empty():
            conn = self.free.get_nowait()
            if conn is not None:
                conn.close()


@dataclass
class User:
    """A member account as the load sees it: its token, connections and recent runs."""

    id: int
    name: str
    headers: str
    pool: Pool
    runs: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))
    # Own runs not yet seen to have started or ended: the ones worth moving or cancelling.
    live: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))

    def request(self, method: str, path: str, payload: Any = None) -> bytes:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {qb.API}{path} HTTP/1.1\r\n{self.headers}"
        if method != "GET":
            head += f"Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        return head.encode() + b"\r\n" + body

    def queued(self, ids: list[int]) -> None:
        self.runs.extend(ids)
        self.live.extend(ids)

    def target(self) -> int:
        """The own run most likely still pending: the newest not seen to have moved on."""
        return self.live[-1] if self.live else self.runs[-1]

    def moved_on(self, execution_id: int) -> None:
        with contextlib.suppress(ValueError):
            self.live.remove(execution_id)


# -- tallies ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one step's requests got: latencies and race 4xx of the requests due in the
    measured window, errors of every request of the step (warm-up included)."""

    window: tuple[float, float]
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    race: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    sent_in_window: int = 0
    answered_in_window: int = 0
    requests: int = 0
    substituted: int = 0
    first_id: int | None = None
    last_id: int | None = None

    def in_window(self, moment: float) -> bool:
        return self.window[0] <= moment < self.window[1]

    def sent(self, due: float, now: float) -> None:
        self.requests += 1
        if self.in_window(due):
            self.lags.append((now - due) * 1000)
        if self.in_window(now):
            self.sent_in_window += 1

    def answered(self, route: str, due: float, done: float) -> None:
        if self.in_window(done):
            self.answered_in_window += 1
        if self.in_window(due):
            self.latencies[route].append((done - due) * 1000)

    def error(self, route: str, kind: str, sample: str = "") -> None:
        key = f"{route}: {kind}"
        self.errors[key] += 1
        if sample and key not in self.error_samples:
            self.error_samples[key] = sample

    def queued(self, ids: list[int]) -> None:
        if ids:
            low, high = min(ids), max(ids)
            self.first_id = low if self.first_id is None else min(self.first_id, low)
            self.last_id = high if self.last_id is None else max(self.last_id, high)

    def all_latencies(self) -> list[float]:
        return [ms for values in self.latencies.values() for ms in values]


# -- the mix ------------------------------------------------------------------------------


@dataclass
class Load:
    """Everything a request needs: the users, the test cases and the current step's tally."""

    users: list[User]
    cases: list[int]
    rng: random.Random
    tally: Tally

    def pick(self, user: User) -> tuple[str, str, str, Any]:
        """The next request of `user`: (route, method, path, JSON body or None)."""
        route = self.rng.choices(ROUTES, cum_weights=CUMULATIVE)[0]
        if route in NEEDS_OWN_RUN and not user.runs:
            self.tally.substituted += 1
            route = "run"
        if route == "run":
            return route, "POST", f"/executions/tests/{self.rng.choice(self.cases)}/run", None
        if route == "status":
            return route, "GET", "/executions/queue/status", None
        if route == "detail":
            return route, "GET", f"/executions/{self.rng.choice(user.runs)}", None
        if route == "reprioritise":
            priority = {"priority": self.rng.randint(1, 10)}
            return route, "PATCH", f"/executions/{user.target()}", priority
        if route == "cancel":
            return route, "POST", f"/executions/{user.target()}/cancel", None
        if route == "bulk":
            ids = self.rng.sample(self.cases, self.rng.randint(*BULK_SIZES))
            return route, "POST", "/executions/bulk", {"test_case_ids": ids}
        other = self.rng.choice([u for u in self.users if u is not user])
        return route, "GET", f"/executions?user_id={other.id}", None

    async def one(self, user: User, due: float) -> None:
        """One request of the mix, answered or failed by `due` + REQUEST_TIMEOUT_S.

        Times are time.monotonic(): uvloop's loop.time() is whole milliseconds.
        """
        tally = self.tally
        tally.sent(due, time.monotonic())
        route, method, path, payload = self.pick(user)
        try:
            async with asyncio.timeout(due + REQUEST_TIMEOUT_S - time.monotonic()):
                status, body = await user.pool.exchange(user.request(method, path, payload))
        except TimeoutError:
            tally.error(route, "timeout")
            return
        except STREAM_ERRORS as exc:
            tally.error(route, type(exc).__name__, str(exc)[:SAMPLE_BODY])
            return
        self.settle(user, route, path, status, body, due, time.monotonic())

    def settle(
        self, user: User, route: str, path: str, status: int, body: bytes, due: float, done: float
    ) -> None:
        tally = self.tally
        if status in OK_STATUS[route]:
            tally.answered(route, due, done)
            ids = self.queued_ids(route, body)
            user.queued(ids)
            tally.queued(ids)
            if route == "cancel":
                user.moved_on(_execution_in(path))
        elif status in RACE_STATUS.get(route, ()):
            tally.answered(route, due, done)
            if tally.in_window(due):
                tally.race[route] += 1
            user.moved_on(_execution_in(path))
        else:
            kind = f"{status}" if status >= 500 else f"unexpected {status}"
            tally.error(route, kind, body[:SAMPLE_BODY].decode(errors="replace"))

    @staticmethod
    def queued_ids(route: str, body: bytes) -> list[int]:
        if route == "run":
            return [int(json.loads(body)["id"])]
        if route == "bulk":
            return [int(item["id"]) for item in json.loads(body)["executions"]]
        return []


def _execution_in(path: str) -> int:
    return int(path.split("/")[2])


# -- the dashboards -----------------------------------------------------------------------


@dataclass
class Dashboards:
    """Long-lived `GET /events/queue` streams, each counting the events it reads."""

    port: int
    cookies: list[str]
    events: int = 0
    received: int = 0
    opened: int = 0
    ended: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def open(self, count: int) -> None:
        for n in range(count):
            cookie = self.cookies[n % len(self.cookies)]
            self.tasks.append(asyncio.get_running_loop().create_task(self.watch(cookie)))

    async def watch(self, cookie: str) -> None:
        """Keep one stream open: reconnect when the server ends it or it breaks."""
        while True:
            try:
                await self.stream(cookie)
                self.ended += 1
            except STREAM_ERRORS as exc:
                self.failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                await asyncio.sleep(SSE_RECONNECT_S)

    async def stream(self, cookie: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(
                f"GET /events/queue HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Accept: text/event-stream\r\nCookie: {SESSION_COOKIE}={cookie}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if int(head[9:12]) != 200:
                raise ValueError(f"GET /events/queue answered {head[9:12].decode()}")
            if b"transfer-encoding: chunked" not in head.lower():
                raise ValueError("GET /events/queue is not a chunked stream")
            self.opened += 1
            await self.read_events(reader)
        finally:
            writer.close()

    async def read_events(self, reader: asyncio.StreamReader) -> None:
        """Count `event:` lines in the de-chunked stream until its last chunk."""
        tail = b"\n"
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                return
            data = (await reader.readexactly(size + 2))[:-2]
            self.received += size
            self.events += (tail + data).count(b"\nevent:")
            tail = data[-6:]

    def failed(self) -> int:
        return sum(self.failures.values())

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


# -- the server ---------------------------------------------------------------------------


class LoadServer(qb.Server):
    """noop_server.py as `--workers` processes, on SQLite or PostgreSQL, read directly."""

    def __init__(self, root: Path, database_url: str | None, workers: int) -> None:
        super().__init__(root, qb.Usage(), database_url=database_url)
        self.workers = workers
        self.env["LOG_FORMAT"] = "text"
        self.pg_url = database_url
        self.pg: psycopg.Connection[Any] | None = None
        self.backends: Backends | None = None
        self.extra_args = ["--workers", str(workers)]

    def open_reader(self) -> None:
        if self.pg_url is None:
            self._db = sqlite3.connect(
                f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False
            )
            return
        self.pg = psycopg.connect(workers_bench.conninfo(self.pg_url), autocommit=True)
        row = self.pg.execute("SELECT pg_backend_pid()").fetchone()
        own = int(row[0]) if row else 0
        self.backends = Backends(self.pg_url.rsplit("/", 1)[1], exclude=own)

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query written with `?` placeholders, on either database."""
        if self.pg is None:
            assert self._db is not None
            return self._db.execute(query, params).fetchall()
        return self.pg.execute(query.replace("?", "%s"), params or None).fetchall()

    def stop(self) -> None:
        if self.pg is not None:
            self.pg.close()
        super().stop()

    def cpu_s(self) -> float:
        """CPU of the server and every process it started (its `--workers`), all threads."""
        assert self.proc is not None
        total = 0.0
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(OSError):
                total += qb.process_cpu_s(pid)
        return total

    def postgres_cpu_s(self) -> float:
        return self.backends.sample() if self.backends is not None else 0.0


class Backends:
    """CPU of the local PostgreSQL backends serving one database (the bench's own reading
    backend left out), so that other databases' work on that server is not counted.

    The server's pools open and close connections under load, and a backend that exits
    takes its CPU time with it, so they are sampled every SAMPLE_S and each keeps the
    last time seen: what one used in its last interval, or one born and gone between two
    samples, is missed. `total` is cumulative; take differences.
    """

    def __init__(self, database: str, exclude: int) -> None:
        self.database = database
        self.exclude = exclude
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()

    def sample(self) -> float:
        """Look at every backend now; the CPU seconds of all seen so far."""
        with self.lock:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) == self.exclude:
                    continue
                with contextlib.suppress(OSError):
                    # A backend's title: "postgres: 15/main: <user> <database> <client> <state>".
                    title = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
                    if title.startswith(b"postgres: ") and f" {self.database} ".encode() in title:
                        self.seen[int(entry.name)] = qb.process_cpu_s(int(entry.name))
            return sum(self.seen.values())

    async def keep_sampling(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(BACKEND_SAMPLE_S)


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from the parent ids in /proc/<pid>/stat."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            children[int(parent)].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds of the server, PostgreSQL, this client and the machine, at one moment."""

    server: float
    postgres: float
    backends: int  # PostgreSQL backends of the database seen so far
    client: float
    machine: float
    wall: float

    @classmethod
    def take(cls, srv: LoadServer) -> CpuMark:
        return cls(
            server=srv.cpu_s(),
            postgres=srv.postgres_cpu_s(),
            backends=len(srv.backends.seen) if srv.backends is not None else 0,
            client=qb.own_cpu_s(),
            machine=qb.machine_busy_s(),
            wall=time.monotonic(),
        )


# -- set-up -------------------------------------------------------------------------------


def create_members(srv: LoadServer) -> list[tuple[int, str, str]]:
    """(id, name, session token) of USERS new member accounts, each signed in."""
    members = []
    for n in range(USERS):
        name = f"member{n:02d}"
        made = srv.api.call(
            "POST", "/users", {"username": name, "password": MEMBER_PASSWORD, "role": "member"}
        )
        form = urllib.parse.urlencode({"username": name, "password": MEMBER_PASSWORD})
        status, data = srv.api.send(
            "POST", "/auth/login", form.encode(), "application/x-www-form-urlencoded"
        )
        if status != 200:
            raise qb.BenchError(f"{name} could not sign in: {status} {data[:200]!r}")
        members.append((int(made["id"]), name, str(json.loads(data)["access_token"])))
    return members


def _cookie(response: http.client.HTTPResponse, name: str) -> str:
    for header in response.headers.get_all("Set-Cookie") or []:
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar and jar[name].value:
            return jar[name].value
    raise qb.BenchError(f"no {name} cookie in the answer ({response.status})")


def dashboard_session(port: int, name: str) -> str:
    """Sign in through the dashboard's form (nonce cookie, CSRF field); the session cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/signin")
        response = conn.getresponse()
        page = response.read().decode()
        nonce = _cookie(response, SIGNIN_COOKIE)
        found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
        if found is None:
            raise qb.BenchError("the sign-in form has no CSRF field")
        form = urllib.parse.urlencode(
            {"username": name, "password": MEMBER_PASSWORD, CSRF_FIELD: found[1], "next": "/"}
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"{SIGNIN_COOKIE}={nonce}",
        }
        conn.request("POST", "/signin", form, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 303:
            raise qb.BenchError(f"dashboard sign-in of {name} answered {response.status}")
        return _cookie(response, SESSION_COOKIE)
    finally:
        conn.close()


@dataclass
class Setup:
    """What the load starts from: the members (id, name, token), the test cases and the
    dashboard session cookies."""

    members: list[tuple[int, str, str]]
    cases: list[int]
    cookies: list[str]
    seconds: float


def set_up(srv: LoadServer) -> Setup:
    started = time.monotonic()
    cases = [srv.create_case(f"noop {n}") for n in range(CASES)]
    members = create_members(srv)
    cookies = [dashboard_session(srv.port, name) for _, name, _ in members[:DASHBOARD_USERS]]
    return Setup(members, cases, cookies, time.monotonic() - started)


def make_users(srv: LoadServer, setup: Setup) -> list[User]:
    host = f"Host: 127.0.0.1:{srv.port}\r\n"
    return [
        User(uid, name, f"{host}Authorization: Bearer {token}\r\n", Pool(srv.port, POOL_PER_USER))
        for uid, name, token in setup.members
    ]


# -- one step -----------------------------------------------------------------------------


@dataclass
class Step:
    """One rate (or closed-loop client count) and everything measured during it."""

    label: str
    offered: float | None  # req/s; None in a closed loop
    tally: Tally
    seconds: float
    cpu: tuple[CpuMark, CpuMark] | None = None
    sse_events: int = 0
    sse_bytes: int = 0
    sse_failures: int = 0
    waits_ms: list[float] = field(default_factory=list)
    runs: int = 0
    cancelled_first: int = 0
    still_pending: int = 0
    line_at_end: int = 0

    @property
    def achieved(self) -> float:
        return self.tally.answered_in_window / self.seconds

    @property
    def errors(self) -> int:
        return sum(self.tally.errors.values()) + self.sse_failures

    def p(self, pct: float, route: str | None = None) -> float:
        values = self.tally.latencies[route] if route else self.tally.all_latencies()
        return qb.percentile(values, pct) if values else float("nan")

    def client_behind(self) -> str:
        """Why the client, not the server, set the pace of this step ("" when it did not)."""
        if self.offered is None or not self.tally.lags:
            return ""
        sent = self.tally.sent_in_window / self.seconds
        if sent < (1 - RATE_TOLERANCE) * self.offered:
            return f"the client sent only {sent:.1f} req/s: the offered rate was not achieved"
        lag = qb.percentile(self.tally.lags, 99)
        if lag > CLIENT_LAG_MS:
            return (
                f"requests left up to {lag:.0f} ms late (p99): the latencies include the "
                "client's own delay"
            )
        return ""

    def meets(self) -> bool:
        assert self.offered is not None
        return (
            self.achieved >= (1 - RATE_TOLERANCE) * self.offered
            and self.p(99) < TARGET_P99_MS
            and self.errors == 0
        )

    def misses_widely(self) -> bool:
        assert self.offered is not None
        return (
            self.achieved < WIDE_RATE_SHARE * self.offered
            or not self.p(99) <= WIDE_P99_MS
            or self.errors > WIDE_ERROR_SHARE * max(1, self.tally.requests)
        )


async def sleep_until(moment: float) -> None:
    """Until time.monotonic() reaches `moment`, and no earlier."""
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay + TIMER_SLACK_S)


async def watch_window(step: Step, srv: LoadServer, dashboards: Dashboards) -> None:
    """CPU and dashboard counters at both ends of the measured window."""
    start, end = step.tally.window
    await sleep_until(start)
    first = await asyncio.to_thread(CpuMark.take, srv)
    events, received = dashboards.events, dashboards.received
    await sleep_until(end)
    last = await asyncio.to_thread(CpuMark.take, srv)
    step.cpu = (first, last)
    step.sse_events = dashboards.events - events
    step.sse_bytes = dashboards.received - received


async def offer(load: Load, rate: float, start: float, end: float) -> None:
    """The open loop: one request due every 1/rate s from `start` to `end`, sent on time
    whatever the earlier ones are doing; returns when every one is answered or timed out."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    users, rng = load.users, load.rng
    n = 0
    while (due := start + n * interval) < end:
        await sleep_until(due)
        task = loop.create_task(load.one(rng.choice(users), due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks)


async def closed_clients(load: Load, clients: int, end: float) -> None:
    """The closed loop: `clients` clients, each sending its next request when answered."""

    async def client(user: User) -> None:
        while (now := time.monotonic()) < end:
            await load.one(user, now)

    await asyncio.gather(*(client(load.users[i % len(load.users)]) for i in range(clients)))


async def run_step(
    load: Load,
    srv: LoadServer,
    dashboards: Dashboards,
    step_s: float,
    *,
    rate: float = 0,
    clients: int = 0,
) -> Step:
    """One step, open (`rate`) or closed (`clients`), then the waits of its runs."""
    await wait_drained(srv)
    start = time.monotonic() + 0.05
    window = (start + WARMUP_S, start + WARMUP_S + step_s)
    load.tally = Tally(window)
    label = f"{rate:g} req/s" if rate else f"{clients} client(s)"
    step = Step(label, rate or None, load.tally, step_s)
    failures = dashboards.failed()
    traffic = (
        offer(load, rate, start, window[1]) if rate else closed_clients(load, clients, window[1])
    )
    await asyncio.gather(traffic, watch_window(step, srv, dashboards))
    step.sse_failures = dashboards.failed() - failures
    await asyncio.to_thread(read_waits, srv, step)
    return step


def pending(srv: LoadServer) -> int:
    return int(srv.rows("SELECT count(*) FROM executions WHERE status = 'pending'")[0][0])


async def wait_drained(srv: LoadServer) -> None:
    """Until no run is pending (within DRAIN_WAIT_S): each step starts on an empty line."""
    started = time.monotonic()
    while left := await asyncio.to_thread(pending, srv):
        if time.monotonic() - started > DRAIN_WAIT_S:
            print(f"\n  the line did not drain in {DRAIN_WAIT_S:g} s: {left} runs still pending")
            return
        await asyncio.sleep(0.05)
    if time.monotonic() - started > 0.5:
        print(f"\n  (waited {time.monotonic() - started:.1f} s for the line to drain)")


def read_waits(srv: LoadServer, step: Step) -> None:
    """How long the step's runs waited for a slot, from the database (started_at - queued_at)."""
    tally = step.tally
    step.line_at_end = pending(srv)
    if tally.first_id is None:
        return
    rows = srv.rows(
        "SELECT status, queued_at, started_at FROM executions WHERE id BETWEEN ? AND ?",
        tally.first_id,
        tally.last_id,
    )
    step.runs = len(rows)
    for status, queued_at, started_at in rows:
        if started_at is not None:
            step.waits_ms.append((_moment(started_at) - _moment(queued_at)).total_seconds() * 1000)
        elif status == "cancelled":
            step.cancelled_first += 1
        elif status == "pending":
            step.still_pending += 1


def _moment(value: str | datetime) -> datetime:
    """A timestamp as either database hands it back (SQLite: text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


# -- reporting ----------------------------------------------------------------------------


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def print_step(step: Step, dashboards: int) -> None:
    tally = step.tally
    offered = f"offered {step.offered:g} req/s, " if step.offered else ""
    lag = tally.lags or [0.0]
    print(
        f"\n{step.label}: {offered}answered {step.achieved:.1f} req/s in the {step.seconds:g} s "
        f"window (after {WARMUP_S:g} s warm-up); {tally.requests} requests in the step",
        flush=True,
    )
    if step.offered:
        print(
            f"  client: sent {tally.sent_in_window / step.seconds:.1f} req/s in the window, "
            f"lag behind schedule p99 {qb.percentile(lag, 99):.1f} ms, max {max(lag):.1f} ms"
        )
        if behind := step.client_behind():
            print(f"  CLIENT BEHIND SCHEDULE: {behind}")
    print(f"  {'latency (ms)':34} {'n':>6} {'p50':>6} {'p99':>6} {'max':>6} {'race 4xx':>9}")
    rows = [("all", None)] + [(ROUTE_LABELS[r], r) for r in ROUTES]
    for label, route in rows:
        values = tally.latencies[route] if route else tally.all_latencies()
        race = tally.race[route] if route else sum(tally.race.values())
        top = max(values) if values else float("nan")
        print(
            f"  {label:34} {len(values):>6} {_ms(step.p(50, route)):>6} "
            f"{_ms(step.p(99, route)):>6} {_ms(top):>6} {race:>9}"
        )
    if tally.substituted:
        print(f"  ({tally.substituted} arrivals for a user with no run yet were sent as runs)")
    print_errors(step)
    print_sse(step, dashboards)
    print_waits(step)
    print_cpu(step)


def print_errors(step: Step) -> None:
    tally = step.tally
    if not step.errors:
        print("  errors: none")
        return
    print(f"  ERRORS: {step.errors}")
    for key, count in tally.errors.most_common():
        sample = tally.error_samples.get(key, "")
        print(f"    {count:>6} {key}" + (f"  e.g. {sample!r}" if sample else ""))
    if step.sse_failures:
        print(f"    {step.sse_failures:>6} dashboard streams failed or dropped")


def print_sse(step: Step, dashboards: int) -> None:
    if not dashboards:
        return
    rate = step.sse_events / step.seconds
    print(
        f"  dashboards: {rate:.1f} events/s across {dashboards} streams "
        f"({rate / dashboards:.2f} per stream), {step.sse_bytes / step.seconds / 1e6:.2f} MB/s"
    )


def print_waits(step: Step) -> None:
    waits = step.waits_ms
    if not step.runs:
        print("  dispatcher: no runs queued in this step")
        return
    spread = "none started"
    if waits:
        spread = (
            f"p50 {_ms(qb.percentile(waits, 50))} ms, p99 {_ms(qb.percentile(waits, 99))} ms, "
            f"max {_ms(max(waits))} ms"
        )
    print(
        f"  dispatcher: run queued -> started {spread} over {len(waits)} started runs "
        f"({step.cancelled_first} cancelled before starting, {step.still_pending} still pending "
        f"of {step.runs})"
    )
    if step.still_pending or step.line_at_end > qb.SLOTS:
        print(f"  THE LINE BACKED UP: {step.line_at_end} runs pending after the step")


def print_cpu(step: Step) -> None:
    if step.cpu is None:
        return
    first, last = step.cpu
    wall = last.wall - first.wall
    answered = max(1, step.tally.answered_in_window)
    server = last.server - first.server
    postgres = last.postgres - first.postgres
    client = last.client - first.client
    busy = last.machine - first.machine
    others = max(0.0, busy - server - postgres - client)
    pg = ""
    if last.backends:
        pg = (
            f", its PostgreSQL backends {postgres * 1000 / answered:.2f} ms ({postgres / wall:.0%}"
            f"; {last.backends - first.backends} new backends in the window)"
        )
    print(
        f"  CPU per answered request: server {server * 1000 / answered:.2f} ms "
        f"({server / wall:.0%} of a core){pg}; client {client * 1000 / answered:.2f} ms "
        f"({client / wall:.0%}); other processes {others / wall:.0%} of a core; "
        f"all {qb.CPUS} CPUs {busy / (wall * qb.CPUS):.0%} busy"
    )


def verdict(step: Step) -> str:
    if step.meets():
        return "meets"
    reasons = []
    assert step.offered is not None
    if step.achieved < (1 - RATE_TOLERANCE) * step.offered:
        reasons.append("rate")
    if not step.p(99) < TARGET_P99_MS:
        reasons.append("p99")
    if step.errors:
        reasons.append("errors")
    late = " (client behind schedule)" if step.client_behind() else ""
    return "MISSED (" + ", ".join(reasons) + ")" + late


def print_summary(steps: list[Step]) -> None:
    print(
        f"\nSummary (capacity: answered within {RATE_TOLERANCE:.0%} of the offered rate, "
        f"p99 < {TARGET_P99_MS:g} ms, no errors)"
    )
    print(
        f"  {'offered':>8} {'answered':>9} {'p50':>6} {'p99':>6} {'max':>6} {'errors':>7} "
        f"{'race':>6} {'SSE ev/s':>9} {'start p99':>10}  verdict"
    )
    for step in steps:
        top = max(step.tally.all_latencies(), default=float("nan"))
        start = _ms(qb.percentile(step.waits_ms, 99)) if step.waits_ms else "-"
        print(
            f"  {step.offered or 0:>8g} {step.achieved:>9.1f} {_ms(step.p(50)):>6} "
            f"{_ms(step.p(99)):>6} {_ms(top):>6} {step.errors:>7} "
            f"{sum(step.tally.race.values()):>6} {step.sse_events / step.seconds:>9.1f} "
            f"{start:>10}  {verdict(step)}"
        )
    met = [s.offered for s in steps if s.offered and s.meets()]
    if met:
        print(f"  CAPACITY: {max(met):g} req/s")
    else:
        print("  CAPACITY: below the lowest step (no step met all three conditions)")


def print_closed(steps: list[Step]) -> None:
    print("\nSummary (closed loop: each client sends its next request when answered)")
    print(f"  {'clients':>8} {'req/s':>8} {'p50':>6} {'p99':>6} {'errors':>7}")
    for step in steps:
        print(
            f"  {step.label.split()[0]:>8} {step.achieved:>8.1f} {_ms(step.p(50)):>6} "
            f"{_ms(step.p(99)):>6} {step.errors:>7}"
        )
    fell = False
    for before, after in itertools.pairwise(steps):
        if after.achieved < (1 - RATE_TOLERANCE) * before.achieved:
            fell = True
            print(
                f"  THROUGHPUT FELL from {before.achieved:.1f} to {after.achieved:.1f} req/s "
                f"going from {before.label} to {after.label}"
            )
    if not fell:
        print(f"  throughput never fell by more than {RATE_TOLERANCE:.0%} as clients were added")


# -- the run ------------------------------------------------------------------------------


async def drive(srv: LoadServer, setup: Setup, args: argparse.Namespace) -> list[Step]:
    users = make_users(srv, setup)
    load = Load(users, setup.cases, random.Random(args.seed), Tally((0.0, 0.0)))
    dashboards = Dashboards(srv.port, setup.cookies)
    dashboards.open(args.dashboards)
    sampler = None
    if srv.backends is not None:
        sampler = asyncio.get_running_loop().create_task(srv.backends.keep_sampling())
    steps: list[Step] = []
    try:
        await asyncio.sleep(1.0)  # the streams connect and send their first board
        if dashboards.opened < args.dashboards:
            print(f"  only {dashboards.opened} of {args.dashboards} dashboard streams opened")
        for n in args.closed or []:
            steps.append(await run_step(load, srv, dashboards, args.step_seconds, clients=n))
            print_step(steps[-1], args.dashboards)
        for rate in [] if args.closed else args.rates:
            steps.append(await run_step(load, srv, dashboards, args.step_seconds, rate=rate))
            print_step(steps[-1], args.dashboards)
            if steps[-1].misses_widely():
                print("  (missed by a wide margin: no further steps)")
                break
    finally:
        if sampler is not None:
            sampler.cancel()
        dashboards.close()
        for user in users:
            user.pool.close()
    if dashboards.ended:
        print(f"\n  dashboard streams ended by the server and reopened: {dashboards.ended}")
    for kind, count in dashboards.failures.most_common():
        print(f"  dashboard streams failed: {count} x {kind}")
    return steps


LOG_STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (\w+)")


def server_problems(log: str) -> list[list[str]]:
    """The error entries of the server's log (LOG_FORMAT=text), each with its traceback;
    a traceback printed outside the log (a dying process's) counts as one too."""
    problems: list[list[str]] = []
    current: list[str] | None = None
    for line in log.splitlines():
        stamped = LOG_STAMP.match(line)
        if stamped or (current is None and line.startswith("Traceback")):
            is_error = stamped is None or stamped[1] in ("error", "critical")
            current = [line] if is_error else None
            if current is not None:
                problems.append(current)
        elif current is not None:
            current.append(line)
    return problems


def print_server_log(srv: LoadServer, keep: Path | None) -> None:
    path = srv.root / "server.log"
    log = path.read_text(errors="replace") if path.exists() else ""
    if keep is not None:
        shutil.copyfile(path, keep)
        print(f"\nserver log kept in {keep}")
    problems = server_problems(log)
    if not problems:
        print("\nserver log: no errors")
        return
    kinds = Counter(LOG_STAMP.sub("", problem[0]).strip() for problem in problems)
    print(f"\nserver log: {len(problems)} error(s)")
    for kind, count in kinds.most_common(10):
        print(f"  {count:>6} {kind[:160]}")
    print("  the first, whole:\n    " + "\n    ".join(problems[0][:80]))


@contextlib.contextmanager
def database(admin_url: str | None) -> Iterator[str | None]:
    if admin_url is None:
        yield None
        return
    with workers_bench.fresh_database(admin_url) as url:
        yield url


def machine_lines(args: argparse.Namespace) -> list[str]:
    lines = qb.machine()[:4]
    if args.postgres:
        with psycopg.connect(workers_bench.conninfo(args.postgres)) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        lines.append(f"PostgreSQL {row[0] if row else '?'} at {args.postgres.rsplit('@', 1)[-1]}")
    lines.append(
        f"server processes: {args.workers}; client: one asyncio process (uvloop), HTTP/1.1 "
        f"keep-alive on asyncio streams, up to {POOL_PER_USER} connections per user"
    )
    return lines


def run(args: argparse.Namespace) -> None:
    qb.QUIET_WAIT_S = 5.0
    others = qb.wait_quiet()
    print(f"  others' CPU before the start: {others:.0%} of {qb.CPUS} CPUs")
    with (
        database(args.postgres) as url,
        tempfile.TemporaryDirectory(prefix="testqueue-load-") as folder,
    ):
        srv = LoadServer(Path(folder), url, args.workers)
        try:
            srv.start()
            setup = set_up(srv)
            print(
                f"  set up in {setup.seconds:.1f} s: {USERS} members signed in (no throttle "
                f"setting changed: only failed sign-ins count), {CASES} noop test cases, "
                f"{len(setup.cookies)} dashboard sessions for {args.dashboards} streams",
                flush=True,
            )
            steps = uvloop.run(drive(srv, setup, args))
        except BaseException:
            sys.stderr.write(f"server log:\n{srv.log_tail()}\n")
            raise
        finally:
            srv.stop()
        if args.closed:
            print_closed(steps)
        else:
            print_summary(steps)
        print_server_log(srv, args.server_log)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=_numbers,
        default=list(DEFAULT_RATES),
        help="offered rates in req/s, comma-separated (default "
        f"{','.join(map(str, DEFAULT_RATES))})",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=STEP_S,
        help=f"measured seconds per step, after a {WARMUP_S:g} s warm-up",
    )
    parser.add_argument(
        "--closed",
        type=_numbers,
        metavar="N[,N...]",
        help="closed loop with N clients per step instead of the rates",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a new database on this PostgreSQL server instead of SQLite, e.g. "
        f"{workers_bench.DEFAULT_URL}",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--dashboards",
        type=int,
        default=DASHBOARDS,
        help=f"open /events/queue streams (default {DASHBOARDS})",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the random mix")
    parser.add_argument("--server-log", type=Path, metavar="FILE", help="keep the server's log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print("testqueue capacity under mixed load")
    try:
        for line in machine_lines(args):
            print(f"  {line}")
        run(args)
    except (qb.BenchError, psycopg.Error) as exc:
        print(f"could not measure: {exc}")
    print(f"\n(total time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
