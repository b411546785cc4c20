"""A `testqueue worker` with one extra runner kind, `noop`, for the benchmarks.

    python -P bench/noop_worker.py

Settings come from the environment exactly as for `testqueue worker`
(DATABASE_URL, MAX_CONCURRENT_EXECUTIONS, LOG_LEVEL, ...). It is `run_worker`
from `testqueue.cli` with the registry of `bench/noop_server.py` (its `noop`
runner stamps CLOCK_MONOTONIC as its first instruction), on uvloop, until
SIGTERM or SIGINT. The schema must exist already: start it after the API host.

Run it with `-P` (or `python -m`), like noop_server.py: this folder is added at
the end of sys.path, so nothing here shadows a standard module.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import uvloop

from testqueue import logs
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher

sys.path.append(str(Path(__file__).resolve().parent))
from noop_server import build_registry


async def run_worker(settings: Settings) -> None:
    """A dispatcher with the noop registry, without the API, until SIGTERM or SIGINT."""
    db = Database(settings)
    dispatcher = Dispatcher(settings, db, build_registry(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dispatcher.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await dispatcher.stop()
        await db.dispose()


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    uvloop.run(run_worker(settings))


if __name__ == "__main__":
    main()
