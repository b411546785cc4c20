"""The runner interface: run this execution, honour this deadline and this
cancel signal, report steps, logs and artifacts.

A runner owns what it starts and never touches the database: the dispatcher
hands it a `RunSpec` and a `Reporter`, and records the `Outcome` it returns.
The records a runner reports (`StepRecord`, `ArtifactRecord`, `Outcome`) are
words of `testqueue.vocabulary`; runners see nothing of the queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from testqueue.vocabulary import ArtifactRecord, Outcome, StepRecord


@dataclass(frozen=True)
class RunSpec:
    """Everything a runner needs to know about one execution."""

    execution_id: int
    test_case_id: int | None
    runner: str
    attempt: int
    timeout_s: float
    command: list[str] | None = None
    steps: list[Any] = field(default_factory=list)
    test_data: dict[str, Any] = field(default_factory=dict)
    base_url: str | None = None
    browser: str | None = None
    environment: str | None = None
    worker_id: str = ""


class Reporter(Protocol):
    """Where a runner sends what it sees while it runs."""

    def log(self, text: str) -> None: ...

    def step(self, step: StepRecord) -> None: ...

    def artifact(self, artifact: ArtifactRecord) -> None: ...


class Runner(Protocol):
    """Runs one execution. One instance serves every run of its kind in a process."""

    kind: ClassVar[str]

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: asyncio.Event, report: Reporter
    ) -> Outcome:
        """Run until done, `deadline` (loop time) or `cancel`.

        A test's own failure is an `Outcome`, never an exception.
        """
        ...

    async def close(self) -> None:
        """Release what the runner keeps between runs (a warm browser, say)."""
        ...
