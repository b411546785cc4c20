"""Fresh planner statistics for the line on PostgreSQL.

PostgreSQL plans a count over the line from the table's statistics, which
autovacuum gathers at most once a minute (`autovacuum_naptime`). On a young
database (a fresh install, a benchmark, a test) the line fills long before
that, and with no statistics the planner walks the smallest partial index
over pending runs with a filter instead of the line's own index: a run call
then counts its position with a heap visit per waiting run (1.7 ms with 2,000
waiting, against 0.35 ms once analyzed). So each process asks for an
`ANALYZE executions` itself once it has queued enough runs since its last:
in the background after the commit, one at a time, at most every `MIN_GAP_S`.
SQLite needs none of this: its planner reads the schema, not statistics.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import text

from testqueue.database import Database

log = logging.getLogger(__name__)

# Runs queued by this process before its first ANALYZE, and between later ones.
FIRST_AFTER = 100
EVERY = 5000
MIN_GAP_S = 30.0
_ANALYZE = text("ANALYZE executions")


@dataclass
class _Count:
    since: int = 0
    analyzed_at: float = -math.inf
    analyzed: bool = False
    running: bool = False


_counts: weakref.WeakKeyDictionary[Database, _Count] = weakref.WeakKeyDictionary()


def queued(db: Database, runs: int) -> None:
    """`runs` were just committed to the line; analyze the table when it is due."""
    if db.is_sqlite:
        return
    count = _counts.setdefault(db, _Count())
    count.since += runs
    due = count.since >= (EVERY if count.analyzed else FIRST_AFTER)
    now = time.monotonic()
    if not due or count.running or now - count.analyzed_at < MIN_GAP_S:
        return
    count.since, count.analyzed_at, count.analyzed, count.running = 0, now, True, True
    db.in_background(_analyze(db, count))


async def _analyze(db: Database, count: _Count) -> None:
    try:
        async with db.autocommit() as conn:
            await conn.execute(_ANALYZE)
    except Exception as exc:  # statistics are an optimisation: never fail a caller over them
        log.warning("could not analyze the executions table", extra={"error": str(exc)})
    finally:
        count.running = False
