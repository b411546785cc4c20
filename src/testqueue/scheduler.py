"""Per worker process: sleep until the next schedule's tick, fire it, sleep again.

Every worker runs one (a task of its `Dispatcher`), so schedules fire while
any worker lives; `services.schedule_fires` makes sure each tick queues one
batch however many look at once. The sleep ends at the earliest
`next_fire_at`, or at once when a schedule changes: in this process by
`Wakeups.schedules_event`, from other hosts by the `schedules` NOTIFY the
dispatcher relays to the same event. `SCHEDULE_CHECK_INTERVAL` bounds the
sleep only as a safety net.
"""

from __future__ import annotations

import asyncio
import logging

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import utcnow
from testqueue.services import schedule_fires, schedules
from testqueue.wakeups import first_of

log = logging.getLogger(__name__)

# The NOTIFY payload of a schedule change; the dispatcher relays it to `schedules_event`.
SIGNAL = schedules.SCHEDULES_SIGNAL

# After a pass failed (the database unreachable, say), wait this long before the next.
ERROR_BACKOFF_S = 1.0


class Scheduler:
    """The schedule loop of one worker process."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self.passes = 0  # how many looks it took: tests wait on it

    async def run(self, stopping: asyncio.Event) -> None:
        """Fire what is due, then sleep until the next tick, an edit or `stopping`."""
        wakeup = self._db.wakeups.schedules_event
        while not stopping.is_set():
            # Cleared before the read: an edit committed meanwhile sets it again.
            wakeup.clear()
            try:
                wait_s = await self._pass()
            except Exception:
                log.exception("schedule pass failed")
                wait_s = ERROR_BACKOFF_S
            self.passes += 1
            if wait_s > 0:
                await first_of(wakeup, stopping, timeout=wait_s)

    async def _pass(self) -> float:
        """Fire the due ticks; the seconds until the next one (bounded by the safety net)."""
        looked = await schedule_fires.fire_due(self._db, utcnow())
        if looked >= schedule_fires.DUE_PER_PASS:
            return 0.0
        upcoming = await schedule_fires.next_due(self._db)
        interval = self._settings.schedule_check_interval
        if upcoming is None:
            return interval
        wait_s = (upcoming - utcnow()).total_seconds()
        # Still due after the pass: it failed, so look again after a pause, not at once.
        return min(interval, wait_s if wait_s > 0 else ERROR_BACKOFF_S)
