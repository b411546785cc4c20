"""The runner interface: run this execution, honour this deadline and this
cancel signal, report steps, logs and artifacts.

A runner owns what it starts and never touches the database: the dispatcher
hands it a `RunSpec` and a `Reporter`, and records the `Outcome` it returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from testqueue.models import Result


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


@dataclass(frozen=True)
class StepRecord:
    """What one step of a test did."""

    number: int
    action: str
    result: str  # pass | fail | error | skip
    description: str = ""
    duration_ms: float = 0.0
    error_message: str | None = None
    screenshot: str | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """A file a run left behind (a screenshot, a trace), under the artifacts folder."""

    kind: str  # screenshot | trace | file
    name: str
    path: Path
    content_type: str


@dataclass(frozen=True)
class Outcome:
    """How a run ended. `result` is None when the run was cancelled."""

    result: Result | None
    exit_code: int | None = None
    error_message: str | None = None


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
