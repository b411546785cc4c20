"""Browser runner benchmark: what the runner adds to a one-step browser test.

    .venv/bin/python bench/browser.py [--warm-runs N] [--cold-runs N]
                                      [--throughput-runs N] [--concurrency N]
                                      [--chromium PATH] [--json FILE]

The test is one step, `goto /`, against a tiny page served on 127.0.0.1 by
this script. Overhead is the wall time of `BrowserRunner.run` minus the time
the step itself took (its `duration_ms`): launching or borrowing Chromium,
opening and closing the context, tracing, recording.

- cold: a new runner for every run, so each run launches Chromium.
- warm: one runner, the shared browser already running (the default path).
- throughput: `--concurrency` runs at once on one runner, one-step runs per
  minute over `--throughput-runs` runs (a browser recycle included when the
  count passes BROWSER_RECYCLE_AFTER).

Targets: warm overhead p50 <= 150 ms; >= 300 one-step runs per minute with 5
at once. This is a report, not a test: it exits 0 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from testqueue.config import Settings
from testqueue.runners import chromium
from testqueue.runners.base import RunSpec
from testqueue.runners.browser import BrowserRunner
from testqueue.vocabulary import ArtifactRecord, Result, StepRecord

PAGE = b"<!doctype html><title>bench</title><h1>hello</h1>"
RUN_BUDGET_S = 60.0
WARMUP_RUNS = 5
TARGET_WARM_P50_MS = 150.0
TARGET_RUNS_PER_MIN = 300.0


class StepClock:
    """A Reporter that keeps only the step durations."""

    def __init__(self) -> None:
        self.step_ms = 0.0
        self.results: list[str] = []

    def log(self, text: str) -> None:
        pass

    def step(self, step: StepRecord) -> None:
        self.step_ms += step.duration_ms
        self.results.append(step.result)

    def artifact(self, artifact: ArtifactRecord) -> None:
        pass


@dataclass
class Figures:
    chromium: str
    cpus: int
    load_average: float
    cold_runs: int
    cold_p50_ms: float
    cold_p99_ms: float
    warm_runs: int
    warm_p50_ms: float
    warm_p99_ms: float
    throughput_runs: int
    concurrency: int
    runs_per_minute: float
    cpu_ms_per_run: float
    idle_runs_per_minute: float


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(PAGE)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + PAGE)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serve_page() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def one_step(base_url: str, execution_id: int) -> RunSpec:
    return RunSpec(
        execution_id=execution_id,
        test_case_id=1,
        runner="browser",
        attempt=1,
        timeout_s=RUN_BUDGET_S,
        steps=[{"action": "goto", "url": "/"}],
        base_url=base_url,
    )


async def timed_run(runner: BrowserRunner, spec: RunSpec) -> float:
    """One run; the milliseconds it took beyond its step."""
    loop = asyncio.get_running_loop()
    clock = StepClock()
    started = loop.time()
    outcome = await runner.run(
        spec, deadline=started + RUN_BUDGET_S, cancel=asyncio.Event(), report=clock
    )
    elapsed_ms = (loop.time() - started) * 1000
    if outcome.result is not Result.PASS:
        raise RuntimeError(f"benchmark run did not pass: {outcome}")
    return elapsed_ms - clock.step_ms


async def cold(settings: Settings, base_url: str, runs: int) -> list[float]:
    overheads = []
    for number in range(runs):
        runner = BrowserRunner(settings)
        try:
            overheads.append(await timed_run(runner, one_step(base_url, number)))
        finally:
            await runner.close()
    return overheads


async def warm(runner: BrowserRunner, base_url: str, runs: int) -> list[float]:
    for number in range(WARMUP_RUNS):
        await timed_run(runner, one_step(base_url, number))
    return [await timed_run(runner, one_step(base_url, n)) for n in range(runs)]


async def throughput(
    runner: BrowserRunner, base_url: str, runs: int, concurrency: int
) -> tuple[float, float]:
    """One-step runs per minute with `concurrency` runs in flight, and CPU ms per run."""
    numbers = iter(range(runs))

    async def lane() -> None:
        for number in numbers:
            await timed_run(runner, one_step(base_url, number))

    loop = asyncio.get_running_loop()
    cpu_before = tree_cpu_s()
    started = loop.time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = loop.time() - started
    return runs / elapsed * 60, (tree_cpu_s() - cpu_before) / runs * 1000


def tree_cpu_s() -> float:
    """CPU seconds used by this process and its descendants (Playwright's driver, Chromium).

    Wall-clock figures move with whatever else the machine runs; CPU per run does
    not, and bounds the rate an idle machine of this size could reach.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, and cutime, cstime: the time of children already reaped.
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / ticks)
    tree, todo = {os.getpid()}, [os.getpid()]
    while todo:
        parent = todo.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        tree.update(children)
        todo.extend(children)
    return sum(stats[pid][1] for pid in tree if pid in stats)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return round(ordered[index], 1)


async def measure(args: argparse.Namespace, workdir: Path) -> Figures:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{workdir / 'bench.db'}",
        artifacts_dir=workdir / "artifacts",
        chromium_path=args.chromium,
    )
    executable = chromium.find_chromium(settings.chromium_path)
    if executable is None:
        raise SystemExit(chromium.missing_chromium_message(settings.chromium_path))
    # Other work on the machine moves every figure; say how busy it was.
    load_at_start = os.getloadavg()[0]
    async with serve_page() as base_url:
        cold_ms = await cold(settings, base_url, args.cold_runs)
        # No recycle inside the warm sample: it is the cold path, measured above.
        no_recycle = settings.model_copy(update={"browser_recycle_after": args.warm_runs + 100})
        runner = BrowserRunner(no_recycle)
        try:
            warm_ms = await warm(runner, base_url, args.warm_runs)
        finally:
            await runner.close()
        # The default recycle stays on here: its cost is part of the sustained rate.
        runner = BrowserRunner(settings)
        try:
            await warm(runner, base_url, 0)
            per_minute, cpu_ms = await throughput(
                runner, base_url, args.throughput_runs, args.concurrency
            )
        finally:
            await runner.close()
    return Figures(
        chromium=executable,
        cpus=os.cpu_count() or 0,
        load_average=round(load_at_start, 2),
        cold_runs=len(cold_ms),
        cold_p50_ms=percentile(cold_ms, 0.5),
        cold_p99_ms=percentile(cold_ms, 0.99),
        warm_runs=len(warm_ms),
        warm_p50_ms=percentile(warm_ms, 0.5),
        warm_p99_ms=percentile(warm_ms, 0.99),
        throughput_runs=args.throughput_runs,
        concurrency=args.concurrency,
        runs_per_minute=round(per_minute, 1),
        cpu_ms_per_run=round(cpu_ms, 1),
        idle_runs_per_minute=round(60_000 / cpu_ms * (os.cpu_count() or 1), 1),
    )


def report(figures: Figures) -> None:
    def verdict(ok: bool) -> str:
        return "meets target" if ok else "MISSES target"

    warm_ok = figures.warm_p50_ms <= TARGET_WARM_P50_MS
    rate_ok = figures.runs_per_minute >= TARGET_RUNS_PER_MIN
    print(
        f"chromium: {figures.chromium} ({figures.cpus} CPUs, Python {platform.python_version()},"
        f" 1-min load average at start {figures.load_average})"
    )
    print(
        f"cold overhead  ({figures.cold_runs} runs): "
        f"p50 {figures.cold_p50_ms:.0f} ms, p99 {figures.cold_p99_ms:.0f} ms"
    )
    print(
        f"warm overhead  ({figures.warm_runs} runs): p50 {figures.warm_p50_ms:.0f} ms, "
        f"p99 {figures.warm_p99_ms:.0f} ms  [target p50 <= {TARGET_WARM_P50_MS:.0f} ms: "
        f"{verdict(warm_ok)}]"
    )
    print(
        f"throughput     ({figures.throughput_runs} runs, {figures.concurrency} at once): "
        f"{figures.runs_per_minute:.0f} one-step runs/min  "
        f"[target >= {TARGET_RUNS_PER_MIN:.0f}: {verdict(rate_ok)}]"
    )
    print(
        f"cpu per run    {figures.cpu_ms_per_run:.0f} ms (runner, driver and Chromium together):"
        f" an idle {figures.cpus}-CPU machine could reach {figures.idle_runs_per_minute:.0f}/min"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--throughput-runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--chromium", default=None, help="a Chromium to use (CHROMIUM_PATH)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="testqueue-bench-") as workdir:
        figures = asyncio.run(measure(args, Path(workdir)))
    report(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")


if __name__ == "__main__":
    main()
