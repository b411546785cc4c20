"""Aging's bound, measured: a priority-10 run under a constant stream of priority-1 work.

    .venv/bin/python bench/aging.py [--aging 1.0] [--run 0.2]

A real server with 5 slots runs `sleep` test cases of `--run` seconds; a
feeder keeps at least 30 priority-1 runs waiting at all times. Once the
stream is steady a priority-10 run is queued. With AGING_SECONDS=A it rises
one level per A seconds waited and reaches priority 1 after 9 A, ahead of
every priority-1 run queued after it, so it starts within 9 A plus the time
the priority-1 runs queued before it take (a few run lengths). With aging
off (AGING_SECONDS=0) it waits as long as the stream lasts: the same run is
shown for contrast, cut off at twice the bound.

This is a report, not a test: it exits 0 when the bound is missed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import queue_bench as qb

BACKLOG = 30
LEVELS = 9  # priority 10 to priority 1


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def low_priority_wait(aging_s: float, run_s: float, give_up_s: float) -> float | None:
    """Seconds the priority-10 run waited, or None when it had not started by `give_up_s`."""
    with tempfile.TemporaryDirectory(prefix="testqueue-aging-") as folder:
        srv = qb.Server(Path(folder), qb.Usage())
        srv.env["AGING_SECONDS"] = str(aging_s)
        srv.start()
        try:
            case = srv.create_case("work", runner="sleep", test_data={"seconds": run_s})
            pending = "SELECT count(*) FROM executions WHERE status = 'pending' AND priority = 1"

            def feed() -> None:
                short = BACKLOG - srv.scalar(pending)
                if short > 0:
                    body = {"test_case_ids": [case] * short, "priority": 1}
                    srv.api.call("POST", "/executions/bulk", body)

            until = time.monotonic() + 3 * run_s
            while time.monotonic() < until:  # the stream reaches its steady state
                feed()
                time.sleep(run_s / 4)
            low = srv.api.call("POST", f"/executions/tests/{case}/run", {"priority": 10})["id"]
            give_up = time.monotonic() + give_up_s
            while time.monotonic() < give_up:
                feed()
                detail = srv.api.call("GET", f"/executions/{low}")
                if detail["started_at"]:
                    return _stamp(detail["started_at"]) - _stamp(detail["queued_at"])
                time.sleep(run_s / 4)
            return None
        finally:
            srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aging", type=float, default=1.0, help="AGING_SECONDS")
    parser.add_argument("--run", type=float, default=0.2, help="seconds each run takes")
    args = parser.parse_args()
    backlog_s = BACKLOG * args.run / qb.SLOTS
    bound = LEVELS * args.aging + backlog_s + args.run
    stamp = f"{datetime.now():%Y-%m-%d %H:%M}"
    print(f"testqueue aging, {stamp}: {qb.SLOTS} slots, runs of {args.run:g} s,")
    print(f"  {BACKLOG} priority-1 runs always waiting; one priority-10 run queued into the stream")
    print(f"  bound: 9 x {args.aging:g} s + {backlog_s:.1f} s backlog + one run = {bound:.1f} s")
    waited = low_priority_wait(args.aging, args.run, 2 * bound)
    if waited is None:
        print(f"  AGING_SECONDS={args.aging:g}: not started within {2 * bound:.1f} s: MISSED")
    else:
        verdict = "within the bound" if waited <= bound else "MISSED"
        print(f"  AGING_SECONDS={args.aging:g}: started after {waited:.2f} s: {verdict}")
    strict = low_priority_wait(0, args.run, 2 * bound)
    if strict is None:
        print(f"  AGING_SECONDS=0 (off): still waiting after {2 * bound:.1f} s (starved)")
    else:
        print(f"  AGING_SECONDS=0 (off): started after {strict:.2f} s")


if __name__ == "__main__":
    main()
