"""The line replayed forward: the order runs will start in, and when they will likely start
and end. Positions, wait reasons and estimates all come from one replay
(`policy.simulate`), so they agree with each other and with the claim.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from testqueue.database import Conn
from testqueue.models import utcnow
from testqueue.queue import estimates, line
from testqueue.queue.policy import Forecast, NeedMore, Plan, Policies, Waiting, simulate

# Lists are read this far past the runs asked about, then four times further each time
# the replay runs out of one (`policy.NeedMore`).
READ_AHEAD = 8
MAX_READ = 20_000


@dataclass(frozen=True)
class Outlook:
    """The next runs to start, in order, with their forecasts, read at one instant."""

    now: datetime
    paused: bool
    starts: list[tuple[Waiting, Forecast]]
    running_ends: dict[int, datetime]
    durations: estimates.Durations
    at_now: Plan  # the line as it stands, for what holds each run back

    def position(self, execution_id: int) -> int | None:
        for index, (run, _) in enumerate(self.starts):
            if run.id == execution_id:
                return index + 1
        return None


async def outlook(
    conn: Conn,
    policies: Policies,
    default_slots: int,
    default_timeout_s: float,
    depth: int,
    until: int | None = None,
) -> Outlook:
    """Replay the next `depth` starts (or up to `until`, an execution id)."""
    now = utcnow()
    k = depth + READ_AHEAD
    while True:
        read = await line.read_line(conn, k, default_slots)
        try:
            return await _replay(conn, read, policies, now, default_timeout_s, depth, until)
        except NeedMore:
            if k >= MAX_READ:  # replay what was read, as if the lists ended there
                read = replace(read, truncated=frozenset())
                return await _replay(conn, read, policies, now, default_timeout_s, depth, until)
            k = min(MAX_READ, k * 4)


async def _replay(
    conn: Conn,
    read: line.Line,
    policies: Policies,
    now: datetime,
    default_timeout_s: float,
    depth: int,
    until: int | None,
) -> Outlook:
    cases = {run.test_case_id for runs in read.lists for run in runs}
    cases |= {held.test_case_id for held in read.running}
    durations = await estimates.recent_durations(conn, cases)
    ends = {
        held.id: estimates.likely_end(
            now, held.started_at or now, durations.own(held.test_case_id), default_timeout_s
        )
        for held in read.running
    }
    plan = Plan(policies, read.lists, read.running, read.truncated)
    starts = simulate(
        plan,
        read.slots,
        now,
        ends,
        lambda run: durations.assumed(run.test_case_id),
        depth,
        until,
    )
    at_now = Plan(policies, read.lists, read.running, read.truncated)
    return Outlook(now, read.paused, starts, ends, durations, at_now)
