"""How right is `estimated_start`? A mixed workload against a real server, measured.

    .venv/bin/python bench/eta.py [--runs 80] [--seed 7] [--rate 1.25]

Four test cases of the `sleep` runner (bench/noop_server.py) last 0.6, 1.2, 2 and
3 s, each run +-25 % at random. After five runs of each (the history the
estimate learns from), runs arrive one by one at random (exponential gaps) at
`--rate` times what 5 slots can take, so a line builds up and drains. Right
after each run is queued, its `estimated_start` is read from
`GET /executions/{id}`; once everything ran, it is compared with the run's
real start. Runs that waited less than a second are left out (their error is
noise around zero). The report prints the distribution of the absolute error
and of the error as a share of the actual wait; the target is a median share
of at most 25 %.

This is a report, not a test: it exits 0 when the target is missed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import queue_bench as qb

LENGTHS_S = (0.6, 1.2, 2.0, 3.0)
NOISE = 0.25
WARMUP_EACH = 5
MIN_WAIT_S = 1.0
TARGET_SHARE = 0.25


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _percentiles(values: list[float]) -> str:
    cuts = (10, 25, 50, 75, 90)
    return "  ".join(f"p{p} {qb.percentile(values, p):.2f}" for p in cuts)


def measure(runs: int, seed: int, rate: float) -> dict[str, float]:
    rng = random.Random(seed)
    usage = qb.Usage()
    with tempfile.TemporaryDirectory(prefix="testqueue-eta-") as folder:
        srv = qb.Server(Path(folder), usage)
        srv.start()
        try:
            cases = [
                srv.create_case(
                    f"sleep {s}", runner="sleep", test_data={"seconds": s, "noise": NOISE}
                )
                for s in LENGTHS_S
            ]
            srv.wait_done(srv.bulk([c for c in cases for _ in range(WARMUP_EACH)]), 120)
            capacity = qb.SLOTS / statistics.mean(LENGTHS_S)  # runs per second
            estimates: dict[int, str | None] = {}
            at_once = 0
            for _ in range(runs):
                time.sleep(rng.expovariate(capacity * rate))
                run_id = srv.run(rng.choice(cases))
                detail = srv.api.call("GET", f"/executions/{run_id}")
                estimates[run_id] = detail["estimated_start"]
                at_once += detail["status"] != "pending"
            srv.wait_done(list(estimates), 300)
            started = {
                i: _stamp(srv.api.call("GET", f"/executions/{i}")["started_at"]) for i in estimates
            }
            queued = {
                i: _stamp(srv.api.call("GET", f"/executions/{i}")["queued_at"]) for i in estimates
            }
        finally:
            srv.stop()
    unknown = sum(1 for e in estimates.values() if e is None) - at_once
    waited = {i: started[i] - queued[i] for i in estimates}
    judged = [i for i in estimates if estimates[i] and waited[i] >= MIN_WAIT_S]
    errors = [abs(_stamp(estimates[i] or "") - started[i]) for i in judged]
    shares = [abs(_stamp(estimates[i] or "") - started[i]) / waited[i] for i in judged]
    print(f"testqueue ETA accuracy, {datetime.now():%Y-%m-%d %H:%M}, seed {seed}")
    print(f"  {runs} runs arriving at {rate:g} x capacity, {qb.SLOTS} slots, lengths {LENGTHS_S} s")
    print(f"  +-{NOISE:.0%}; {WARMUP_EACH} runs of each test case first")
    print(
        f"  {at_once} started at once; {len(judged)} waited >= {MIN_WAIT_S:g} s; "
        f"{unknown} waiting ones had no estimate"
    )
    if not judged:
        print("  nothing waited long enough to judge: raise --rate or --runs")
        return {}
    wait_list = [waited[i] for i in judged]
    print(f"  actual wait, s:        {_percentiles(wait_list)}")
    print(f"  |error|, s:            {_percentiles(errors)}")
    print(f"  |error| / actual wait: {_percentiles(shares)}")
    median_share = statistics.median(shares)
    verdict = "met" if median_share <= TARGET_SHARE else "MISSED"
    print(f"  median share {median_share:.1%} (target <= {TARGET_SHARE:.0%}): {verdict}")
    return {"median_share": median_share, "median_error_s": statistics.median(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1.25, help="arrivals / capacity")
    args = parser.parse_args()
    measure(args.runs, args.seed, args.rate)


if __name__ == "__main__":
    main()
