"""A runner for engine tests: each run holds its slot until the test opens its gate.

It records when every run started and ended, so a test can check the overlap
never exceeded the slots, and lets the test wait for "n runs have started"
on an event rather than a sleep.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from testqueue.runners import Registry
from testqueue.runners.base import Reporter, RunSpec
from testqueue.vocabulary import Outcome, Result

WAIT_S = 20.0


class GateRunner:
    kind: ClassVar[str] = "gate"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.spans: dict[int, tuple[float, float]] = {}
        self.history: list[tuple[int, float, float]] = []  # every attempt: id, start, end
        self.running: set[int] = set()
        self.max_running = 0
        self.open_all = asyncio.Event()
        self._gates: dict[int, asyncio.Event] = {}
        self._changed = asyncio.Event()

    def gate(self, execution_id: int) -> asyncio.Event:
        return self._gates.setdefault(execution_id, asyncio.Event())

    def release(self, *execution_ids: int) -> None:
        for execution_id in execution_ids:
            self.gate(execution_id).set()

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        begin = time.monotonic()
        self.running.add(spec.execution_id)
        self.max_running = max(self.max_running, len(self.running))
        self.started.append(spec.execution_id)
        self._changed.set()
        waits = [self.open_all.wait(), self.gate(spec.execution_id).wait(), cancel.wait()]
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self.running.discard(spec.execution_id)
            self.spans[spec.execution_id] = (begin, time.monotonic())
            self.history.append((spec.execution_id, *self.spans[spec.execution_id]))
            self._changed.set()
        report.log(f"gate {spec.execution_id} done\n")
        return Outcome(None if cancel.is_set() else Result.PASS)

    async def wait_for(self, predicate: object, timeout: float = WAIT_S) -> None:
        """Until `predicate()` holds, woken by every start and end."""
        assert callable(predicate)

        async def until() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_started(self, count: int) -> None:
        await self.wait_for(lambda: len(self.started) >= count)

    async def close(self) -> None:
        self.open_all.set()


def with_gate(registry: Registry, runner: GateRunner) -> Registry:
    registry.register("gate", lambda _settings: runner)
    return registry
