"""The delivery loop of a worker: send what the outbox holds, when it is due.

It wakes when deliveries are written (`Wakeups.delivery_event`, set in this
process and by other hosts' NOTIFY), when a send ends, and otherwise at the
next retry due or the safety-net poll. Each pass reads when the next
delivery is ready (one read; nothing is locked while nothing is due) and
claims only then, at most `MAX_IN_FLIGHT` at once.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import utcnow
from testqueue.queue import deliveries
from testqueue.wakeups import first_of
from testqueue.webhooks import sender

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
# After a pass that found something ready but took nothing (another host holds it).
MIN_WAIT_S = 0.05
ERROR_BACKOFF_S = 1.0


class DeliveryLoop:
    """Sends due webhook deliveries for one worker until `stopping` is set."""

    def __init__(self, settings: Settings, db: Database, stopping: asyncio.Event) -> None:
        self._settings = settings
        self._db = db
        self._stopping = stopping
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with sender.client(self._settings) as http:
            try:
                while not self._stopping.is_set():
                    await self._wait(await self._pass(http))
            finally:
                for task in self._sending:
                    task.cancel()  # its lease runs out and the delivery is sent again
                await asyncio.gather(*self._sending, return_exceptions=True)

    async def _pass(self, http: httpx.AsyncClient) -> float:
        """Claim and start what is due; how long to wait before the next pass."""
        event = self._db.wakeups.delivery_event
        interval = self._settings.queue_check_interval
        event.clear()
        try:
            ready = await deliveries.next_ready(self._db)
            if ready is None:
                return interval
            wait_s = (ready - utcnow()).total_seconds()
            free = MAX_IN_FLIGHT - len(self._sending)
            if wait_s > 0 or free <= 0:
                return min(interval, max(wait_s, 0.0) or interval)
            claimed = await deliveries.claim_due(self._db, free)
        except Exception as exc:
            log.warning("webhook deliveries could not be read", extra={"error": str(exc)[:300]})
            return ERROR_BACKOFF_S
        for due in claimed:
            task = asyncio.create_task(self._deliver(http, due), name=f"webhook-{due.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return 0.0 if len(claimed) == free else MIN_WAIT_S

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._db.wakeups.delivery_event.set()

    async def _wait(self, wait_s: float) -> None:
        if wait_s <= 0 or self._stopping.is_set():
            return
        await first_of(self._db.wakeups.delivery_event, self._stopping, timeout=wait_s)

    async def _deliver(self, http: httpx.AsyncClient, due: deliveries.Due) -> None:
        try:
            answer = await sender.send(http, self._settings, due)
        except Exception as exc:  # a bug here must not leave the delivery leased for nothing
            log.exception("webhook attempt crashed", extra={"delivery_id": due.id})
            answer = deliveries.Answer(None, 0.0, f"the sender crashed: {exc!r}"[:300])
        try:
            state = await deliveries.record_answer(self._db, due, answer)
        except Exception as exc:  # the lease runs out and the delivery is tried again
            log.warning(
                "webhook attempt could not be recorded",
                extra={"delivery_id": due.id, "error": str(exc)[:300]},
            )
            return
        if not answer.ok:
            log.info(
                "webhook attempt failed",
                extra={
                    "delivery_id": due.id,
                    "attempt": due.attempt,
                    "state": state,
                    "error": answer.error,
                },
            )


async def deliver(settings: Settings, db: Database, stopping: asyncio.Event) -> None:
    """Run a worker's delivery loop until `stopping`."""
    await DeliveryLoop(settings, db, stopping).run()
