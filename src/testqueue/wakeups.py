"""In-process wake-ups: what tells this process's dispatcher to look at the queue again.

The queue sets them after each commit that matters (a run queued, finished,
cancelled or moved, the switches flipped); other hosts hear of the same
commits through the database (`queue.dialect`). One object per `Database`,
so several databases in one process (tests, benchmarks) never wake each
other's dispatchers.
"""

from __future__ import annotations

import asyncio


class Wakeups:
    """The dispatcher's wake-up event and the runs it was asked to stop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.cancel_requests: set[int] = set()
        # A run with a queue deadline was queued: the expiry loop looks again.
        self.deadline_event = asyncio.Event()
        # A schedule was made, changed, paused or resumed: the scheduler reads the next tick.
        self.schedules_event = asyncio.Event()
        # Webhook deliveries were written: the delivery loop looks again.
        self.delivery_event = asyncio.Event()
        # The events some subscription wants, and when that was read (`queue.outbox`).
        self.webhook_events: tuple[float, frozenset[str]] | None = None
        # The queue board may have changed: the live pages' broadcaster looks (`web.live`).
        self.board_event = asyncio.Event()

    def wake(self) -> None:
        """Make the dispatcher run a pass now (the board may have changed too)."""
        self.event.set()
        self.board_event.set()

    def changed(self) -> None:
        """Runs started or ended here, or a change came from elsewhere: the board may differ."""
        self.board_event.set()

    def wake_all(self) -> None:
        """Every loop looks again: after a lost notification channel, anything may have changed."""
        self.webhook_events = None
        for event in (
            self.event,
            self.deadline_event,
            self.schedules_event,
            self.delivery_event,
            self.board_event,
        ):
            event.set()

    def request_cancel(self, execution_id: int) -> None:
        """Ask the dispatcher to stop a run it may hold, at its next pass."""
        self.cancel_requests.add(execution_id)
        self.event.set()

    def take_cancel_requests(self) -> set[int]:
        """The runs asked to stop since the last call."""
        taken, self.cancel_requests = self.cancel_requests, set()
        return taken


async def first_of(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Until any of `events` is set, or `timeout` seconds have passed."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
