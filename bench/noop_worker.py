"""A `testqueue worker` with one extra runner kind, `noop`, for the benchmarks.

    python bench/noop_worker.py

Settings come from the environment exactly as for `testqueue worker`
(DATABASE_URL, MAX_CONCURRENT_EXECUTIONS, LOG_LEVEL, ...). It is `run_worker`
from `testqueue.cli` with the registry of `bench/noop_server.py` (its `noop`
runner stamps CLOCK_MONOTONIC as its first instruction), on uvloop, until
SIGTERM or SIGINT. The schema must exist already: start it after the API host.
"""

from __future__ import annotations

import uvloop

from noop_server import build_registry
from testqueue import cli, logs
from testqueue.config import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    uvloop.run(cli.run_worker(settings, build_registry(settings)))


if __name__ == "__main__":
    main()
