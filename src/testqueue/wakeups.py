"""In-process wake-ups: what tells this process's dispatcher to look at the queue again.

The queue sets them after each commit that matters (a run queued, finished,
cancelled or moved, the switches flipped); other hosts hear of the same
commits through the database (`queue.dialect`). One object per `Database`,
so several databases in one process (tests, benchmarks) never wake each
other's dispatchers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime


class Wakeups:
    """The dispatcher's wake-up event and the runs it was asked to stop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.cancel_requests: set[int] = set()
        # The earliest queue deadline heard of since the expiry loop last looked.
        self.deadline_event = asyncio.Event()
        self.deadline: datetime | None = None

    def wake(self) -> None:
        """Make the dispatcher run a pass now."""
        self.event.set()

    def request_cancel(self, execution_id: int) -> None:
        """Ask the dispatcher to stop a run it may hold, at its next pass."""
        self.cancel_requests.add(execution_id)
        self.event.set()

    def deadline_at(self, at: datetime) -> None:
        """A pending run must expire at `at` unless it starts first."""
        if self.deadline is None or at < self.deadline:
            self.deadline = at
        self.deadline_event.set()

    def take_cancel_requests(self) -> set[int]:
        """The runs asked to stop since the last call."""
        taken, self.cancel_requests = self.cancel_requests, set()
        return taken
