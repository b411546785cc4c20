"""The retention loop of a worker: prune once at start, then every `RETENTION_INTERVAL`.

Every worker runs it; on PostgreSQL the pass of a host that finds another
host pruning is skipped (`queue.prune.sole_pruner`), so one prunes at a time.
A failed pass is logged and tried again at the next interval: retention can
wait, the queue cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.queue import prune

log = logging.getLogger(__name__)


async def retention_loop(db: Database, settings: Settings, stopping: asyncio.Event) -> None:
    """Prune finished runs older than `RETENTION_DAYS` until `stopping`; 0 days: never."""
    if settings.retention_days <= 0:
        return
    while not stopping.is_set():
        await prune_once(db, settings, stopping)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=settings.retention_interval)


async def prune_once(db: Database, settings: Settings, stopping: asyncio.Event) -> None:
    """One pass, if no other host is pruning; errors are logged, never raised."""
    try:
        async with prune.sole_pruner(db) as ours:
            if not ours:
                log.info("retention pass skipped: another host is pruning")
                return
            report = await prune.prune(db, settings, stopping=stopping)
    except Exception:
        log.exception("retention pass failed; trying again at the next interval")
        return
    if report.executions:
        log.info(
            "retention pass removed executions",
            extra={
                "executions": report.executions,
                "batches": len(report.batches),
                "cutoff": report.cutoff.isoformat(),
                "longest_transaction_ms": round(report.longest_transaction_s * 1000, 1),
            },
        )
