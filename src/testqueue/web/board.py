"""The queue as the dashboard shows it: slots, running runs, the line with estimates.

One function builds it for both the first render and every live update, so
the page and the stream can never disagree about a field. Timestamps are ISO
strings because the same dict goes out as JSON; the page script turns them
into elapsed and waited times that tick every second without the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from testqueue.database import Conn
from testqueue.models import Execution, QueueState, TestCase, User, as_utc, utcnow
from testqueue.queue import status as queue_status
from testqueue.queue.order import PENDING, RUNNING
from testqueue.state import AppState
from testqueue.web.render import iso
from testqueue.web.session import Viewer

E = Execution
LINE_SHOWN = 50


def _fingerprint_statement() -> Any:
    stopping = E.cancel_requested.is_(True)
    parts = (
        select(func.count()).where(PENDING),
        select(func.coalesce(func.sum(E.id * (E.priority + 11)), 0)).where(PENDING),
        select(func.count()).where(RUNNING),
        select(func.coalesce(func.sum(E.id), 0)).where(RUNNING),
        select(func.count()).where(RUNNING, stopping),
        select(func.max(E.id)),
        select(QueueState.updated_at).where(QueueState.id == 1),
    )
    return select(*(part.scalar_subquery() for part in parts))


_FINGERPRINT = _fingerprint_statement()


async def fingerprint(state: AppState) -> tuple[Any, ...]:
    """A cheap summary that changes whenever a run is queued, starts, ends or moves.

    Every stream asks this twice a second, so it is one statement over the
    line's partial index and the history index: counts and id sums catch
    arrivals and departures, the priority-weighted sum catches moves, and the
    queue_state row catches an admin changing the slots or pausing.
    """
    async with state.db.read() as conn:
        return tuple((await conn.execute(_FINGERPRINT)).one())


async def _names(
    conn: Conn, case_ids: Iterable[int | None], user_ids: Iterable[int | None]
) -> tuple[dict[int, Any], dict[int, str]]:
    wanted_cases = {i for i in case_ids if i is not None}
    wanted_users = {i for i in user_ids if i is not None}
    cases = await conn.execute(
        select(TestCase.id, TestCase.title, TestCase.timeout_seconds).where(
            TestCase.id.in_(wanted_cases)
        )
    )
    users = await conn.execute(select(User.id, User.username).where(User.id.in_(wanted_users)))
    return {row.id: row for row in cases}, {row.id: row.username for row in users}


@dataclass(frozen=True)
class _Context:
    """What describing one row needs: names, timeouts, durations, the viewer and the time."""

    viewer: Viewer
    cases: dict[int, Any]
    users: dict[int, str]
    default_timeout_s: float
    now: datetime

    def about(self, row: dict[str, Any]) -> dict[str, Any]:
        case = self.cases.get(row["test_case_id"])
        mine = row["user_id"] == self.viewer.id
        return {
            "id": row["execution_id"],
            "test_case_id": row["test_case_id"],
            "title": case.title if case else "(deleted test case)",
            "by": self.users.get(row["user_id"], "-"),
            "priority": row["priority"],
            "attempt": row["attempt"],
            "mine": mine,
            "can_change": mine or self.viewer.is_admin,
        }

    def timeout_of(self, row: dict[str, Any]) -> float:
        case = self.cases.get(row["test_case_id"])
        return (case.timeout_seconds if case else None) or self.default_timeout_s

    def since(self, moment: datetime | None) -> float:
        return max(0.0, (self.now - as_utc(moment)).total_seconds()) if moment else 0.0


@dataclass(frozen=True)
class Collected:
    """What the board shows, read once for every viewer: the queue and the names in it."""

    snap: queue_status.Snapshot
    cases: dict[int, Any]
    users: dict[int, str]
    default_timeout_s: float
    now: datetime


async def collect(state: AppState) -> Collected:
    """The queue as the board shows it, whoever looks."""
    snap = await queue_status.snapshot(state.db, LINE_SHOWN, 0)
    rows = [*snap.active, *snap.queue]
    async with state.db.read() as conn:
        cases, users = await _names(
            conn, (r["test_case_id"] for r in rows), (r["user_id"] for r in rows)
        )
    return Collected(snap, cases, users, state.settings.execution_timeout, utcnow())


async def build(state: AppState, viewer: Viewer) -> dict[str, Any]:
    """The board for one viewer: what runs, what waits, and what this viewer may do to each."""
    return shown(await collect(state), viewer)


def shown(collected: Collected, viewer: Viewer) -> dict[str, Any]:
    """The collected board as one viewer sees it (which runs are theirs, which they may change)."""
    snap = collected.snap
    ctx = _Context(
        viewer, collected.cases, collected.users, collected.default_timeout_s, collected.now
    )
    line = _line(ctx, snap)
    return {
        "slots": snap.max_concurrent,
        "busy": snap.active_count,
        "pending": snap.queued_count,
        "paused": snap.paused,
        "more": max(0, snap.queued_count - len(line)),
        "now": iso(ctx.now),
        "running": [_running(ctx, row) for row in snap.active],
        "line": line,
    }


def _running(ctx: _Context, row: dict[str, Any]) -> dict[str, Any]:
    return {
        **ctx.about(row),
        "started_at": iso(row["started_at"]),
        "elapsed_s": ctx.since(row["started_at"]),
        "timeout_s": ctx.timeout_of(row),
        "stopping": bool(row["cancel_requested"]),
        "eta_end": iso(row["estimated_finish"]),
    }


def _line(ctx: _Context, snap: queue_status.Snapshot) -> list[dict[str, Any]]:
    """The pending rows shown, each with its estimated start and end (none while paused,
    nor for a test case without history of its own)."""
    return [
        {
            **ctx.about(row),
            "effective_priority": row["effective_priority"],
            "position": row["queue_position"],
            "queued_at": iso(row["queued_at"]),
            "waited_s": ctx.since(row["queued_at"]),
            "eta": iso(row["estimated_start"]),
            "eta_in_s": _seconds_until(ctx.now, row["estimated_start"]),
            "eta_end": iso(row["estimated_finish"]),
            "reason": row["wait_reason"],
        }
        for row in snap.queue
    ]


def _seconds_until(now: datetime, moment: datetime | None) -> float | None:
    return (as_utc(moment) - now).total_seconds() if moment else None
