"""A `testqueue serve` with one extra runner kind, `noop`, for the benchmarks.

    python bench/noop_server.py --port 8765 [--no-worker] [--workers N]

Settings come from the environment exactly as for `testqueue serve`
(DATABASE_URL, TESTQUEUE_ADMIN_PASSWORD, LOG_LEVEL, ...). The app is the real
one from `create_app`, served by uvicorn the way `cli.serve` does it (uvloop
and httptools when installed), so the only difference is the registry.

With `--workers N` (N > 1) uvicorn runs N processes on the one port, each
building its app with `make_app` (each with its own dispatcher unless
`--no-worker`), as several hosts sharing one database would.

The `noop` runner's first instruction reads CLOCK_MONOTONIC (system-wide on
Linux, so the client process can compare it with its own reading) and logs it;
the log is saved with the outcome, in the same transaction that completes the
run, and the client reads it back from `GET /api/v1/executions/{id}/log`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from pathlib import Path
from typing import ClassVar

import uvicorn
from fastapi import FastAPI

from testqueue import logs
from testqueue.app import create_app
from testqueue.config import Settings
from testqueue.database import migrate
from testqueue.runners import Registry
from testqueue.runners.base import Reporter, RunSpec
from testqueue.vocabulary import Outcome, Result


class NoopRunner:
    """Does nothing but say when it started (CLOCK_MONOTONIC, in ns) and pass."""

    kind: ClassVar[str] = "noop"

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        stamp = time.monotonic_ns()
        report.log(str(stamp))
        return Outcome(Result.PASS)

    async def close(self) -> None:
        """Nothing is kept between runs."""


class SleepRunner:
    """Sleeps `test_data.seconds`, scaled by a random factor in `test_data.noise` (0.2 =
    +-20 %), and passes: a test of known, noisy length that costs no CPU."""

    kind: ClassVar[str] = "sleep"

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        seconds = float(spec.test_data.get("seconds", 1.0))
        noise = float(spec.test_data.get("noise", 0.0))
        length = seconds * random.uniform(1 - noise, 1 + noise)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancel.wait(), timeout=length)
        return Outcome(None if cancel.is_set() else Result.PASS)

    async def close(self) -> None:
        """Nothing is kept between runs."""


def build_registry(settings: Settings) -> Registry:
    registry = Registry(settings)
    registry.register(NoopRunner.kind, lambda _settings: NoopRunner())
    registry.register(SleepRunner.kind, lambda _settings: SleepRunner())
    return registry


HERE = Path(__file__).resolve().parent
# How `--no-worker` reaches the processes of `--workers N`, which build their own app.
NO_WORKER_ENV = "NOOP_SERVER_NO_WORKER"


def make_app() -> FastAPI:
    """The app from the environment alone: what each process of `--workers N` serves."""
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    with_worker = os.environ.get(NO_WORKER_ENV) != "1"
    return create_app(settings, registry=build_registry(settings), with_worker=with_worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-worker", action="store_true", help="API only, as serve --no-worker")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes on the one port (default 1)"
    )
    args = parser.parse_args()
    os.environ[NO_WORKER_ENV] = "1" if args.no_worker else "0"
    if args.workers > 1:
        # The schema first, once, as `testqueue serve --workers N` does before its processes
        # start: they then find it up to date and start at once.
        settings = Settings()
        logs.configure(settings.log_level, settings.log_format)
        migrate(settings)
        # An import string and a factory: each process imports this module and builds its app.
        uvicorn.run(
            "noop_server:make_app",
            factory=True,
            workers=args.workers,
            app_dir=str(HERE),
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
        )
        return
    uvicorn.run(make_app(), host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
