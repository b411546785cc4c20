"""Which pending run starts next: the one definition of the order (invariant 2).

The claim, the positions, the wait reasons and the estimates all ask this
module, so they cannot disagree. It is plain Python over rows the caller
read (`queue.line`): the line arrives as one list per (priority, user), each
in `queued_at, id` order, which is also that list's order of effective
priority (an older run has aged at least as far). The next run is then the
best head among the lists:

    lowest effective priority
    -> (fair share) the user with the fewest running
    -> earliest queued_at -> lowest id

skipping a user at their cap and, inside a list, a run whose concurrency key
is at its limit (it keeps its place; the runs behind it are not held up).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from testqueue.vocabulary import FairShare, effective_priority

if TYPE_CHECKING:
    from testqueue.config import Settings


@dataclass(frozen=True)
class Policies:
    """The policies a process claims by: FAIR_SHARE, MAX_RUNNING_PER_USER, AGING_SECONDS."""

    fair_share: FairShare = FairShare.USER
    user_cap: int = 0  # 0 = no cap
    aging_s: float = 0.0  # 0 = off

    @classmethod
    def of(cls, settings: Settings) -> Policies:
        return cls(settings.fair_share, settings.max_running_per_user, settings.aging_seconds)

    @property
    def reorders_users(self) -> bool:
        """Whether who queued a run can change its place (fair share or a per-user cap)."""
        return self.fair_share == FairShare.USER or self.user_cap > 0

    def effective(self, priority: int, queued_at: datetime, now: datetime) -> int:
        return effective_priority(priority, (now - queued_at).total_seconds(), self.aging_s)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A pending run as the order sees it."""

    id: int
    priority: int
    queued_at: datetime
    user_id: int | None
    key: str | None = None
    key_limit: int = 1
    test_case_id: int | None = None
    required_tags: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Holding:
    """A running run: what it holds of a user's cap and a key's limit."""

    id: int
    user_id: int | None
    key: str | None = None
    test_case_id: int | None = None
    started_at: datetime | None = None


class NeedMore(Exception):
    """A list read only in part ran out before the next run was certain: read more of it."""


@dataclass
class Blocked:
    """Why a pending run cannot start at this instant, beyond a busy slot."""

    user_cap: bool = False
    key_holder: int | None = None  # a running run with the same key


@dataclass
class Plan:
    """The line and what runs, advanced one start (or one finish) at a time."""

    policies: Policies
    lists: Sequence[Sequence[Waiting]]
    running: Sequence[Holding]
    truncated: frozenset[int] = frozenset()  # indexes of lists read only in part
    usable: Callable[[Waiting], bool] | None = None  # e.g. a worker's tags, a deadline
    _heads: list[int] = field(default_factory=list)
    _taken: set[int] = field(default_factory=set)
    by_user: Counter[int | None] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)
    holders: dict[str, list[int]] = field(default_factory=dict)
    # Each list's next run and its place in the order, kept until something it depends
    # on changes: a start from the list, its user's share, any key's holders.
    _fronts: dict[int, tuple[tuple[int, int, datetime, int], Waiting] | None] = field(
        default_factory=dict
    )
    _fronts_at: datetime | None = None
    _lists_of: dict[int | None, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._heads = [0] * len(self.lists)
        for index, runs in enumerate(self.lists):
            for user_id in {run.user_id for run in runs}:  # one user per list, as `line` reads it
                self._lists_of.setdefault(user_id, []).append(index)
        for held in self.running:
            self._hold(held.id, held.user_id, held.key)

    def _hold(self, run_id: int, user_id: int | None, key: str | None) -> None:
        self.by_user[user_id] += 1
        if key is not None:
            self.by_key[key] += 1
            self.holders.setdefault(key, []).append(run_id)
        self._moved(user_id, key)

    def release(self, run_id: int, user_id: int | None, key: str | None) -> None:
        """A run ended: its user and key hold one fewer."""
        self.by_user[user_id] -= 1
        if key is not None:
            self.by_key[key] -= 1
            self.holders[key].remove(run_id)
        self._moved(user_id, key)

    def _moved(self, user_id: int | None, key: str | None) -> None:
        """A user's share (and a key's holders) changed: the fronts that depend on it are
        found again."""
        if key is not None:
            self._fronts.clear()
            return
        for index in self._lists_of.get(user_id, ()):
            self._fronts.pop(index, None)

    def capped(self, user_id: int | None) -> bool:
        cap = self.policies.user_cap
        return bool(cap) and self.by_user[user_id] >= cap

    def key_full(self, run: Waiting) -> bool:
        return run.key is not None and self.by_key[run.key] >= run.key_limit

    def next(self, now: datetime) -> Waiting | None:
        """The run that starts next at `now`, or None when nothing may start.

        Raises `NeedMore` when a list read in part would have to be read further.
        """
        fronts = self._fronts
        if now != self._fronts_at:
            fronts.clear()
            self._fronts_at = now
        if len(fronts) < len(self.lists):
            for index in range(len(self.lists)):
                if index not in fronts:
                    fronts[index] = self._front(index, now)
        # Places in the order are unique (the id is last), so runs are never compared.
        best = min(filter(None, fronts.values()), default=None)
        return None if best is None else best[1]

    def _front(
        self, index: int, now: datetime
    ) -> tuple[tuple[int, int, datetime, int], Waiting] | None:
        """One list's next run and its place in the order at `now`."""
        head = self._head(index, self.lists[index])
        front = None
        if head is not None:
            fair = self.policies.fair_share == FairShare.USER
            order = (
                self.policies.effective(head.priority, head.queued_at, now),
                self.by_user[head.user_id] if fair else 0,
                head.queued_at,
                head.id,
            )
            front = (order, head)
        return front

    def _head(self, index: int, runs: Sequence[Waiting]) -> Waiting | None:
        """The first run of one list that may start now (the list is one user's)."""
        at = self._heads[index]
        while at < len(runs) and runs[at].id in self._taken:
            at += 1
        self._heads[index] = at
        if at < len(runs) and self.capped(runs[at].user_id):
            return None
        for run in runs[at:]:
            if run.id in self._taken or self.key_full(run):
                continue
            if self.usable is not None and not self.usable(run):
                continue
            return run
        if index in self.truncated:
            raise NeedMore
        return None

    def start(self, run: Waiting) -> None:
        self._taken.add(run.id)
        self._hold(run.id, run.user_id, run.key)

    def take(self, now: datetime, count: int) -> list[Waiting]:
        """The next `count` runs to start at `now` (fewer when the policies hold the rest)."""
        taken: list[Waiting] = []
        while len(taken) < count:
            run = self.next(now)
            if run is None:
                break
            self.start(run)
            taken.append(run)
        return taken

    def blocked(self, run: Waiting) -> Blocked:
        """What holds a pending run back at this instant (empty when only the slots do)."""
        if self.capped(run.user_id):
            return Blocked(user_cap=True)
        if self.key_full(run):
            assert run.key is not None
            return Blocked(key_holder=min(self.holders.get(run.key) or [0]) or None)
        return Blocked()


@dataclass(frozen=True)
class Forecast:
    """When a run will likely start and end, as the simulation of the slots has it."""

    start: datetime
    finish: datetime


def simulate(
    plan: Plan,
    slots: int,
    now: datetime,
    running_ends: dict[int, datetime],
    seconds_of: Callable[[Waiting], float],
    limit: int,
    until: int | None = None,
) -> list[tuple[Waiting, Forecast]]:
    """The next `limit` starts in order, replaying the slots forward from `now`.

    Each running run frees its slot (and its user's and key's share) at its
    likely end (`running_ends`); each start holds one for `seconds_of(run)`.
    The order is taken at `now` throughout: the line as it stands, so the
    forecast's order is the positions' order. Stops early once `until` (an id)
    has started. May raise `NeedMore`.
    """
    users = {held.id: (held.user_id, held.key) for held in plan.running}
    # Runs ending at one instant free their slots in the order they started.
    ends = sorted((end, seq, rid) for seq, (rid, end) in enumerate(running_ends.items()))
    # With more running than slots (the slots were lowered), only the last endings free one.
    free = slots - len(ends)
    clock = now
    out: list[tuple[Waiting, Forecast]] = []
    while len(out) < limit:
        run = plan.next(now) if free > 0 else None
        if run is not None:
            plan.start(run)
            finish = clock + timedelta(seconds=max(0.0, seconds_of(run)))
            users[run.id] = (run.user_id, run.key)
            heapq.heappush(ends, (finish, len(users), run.id))
            out.append((run, Forecast(clock, finish)))
            free -= 1
            if run.id == until:
                break
            continue
        if not ends:
            break  # nothing runs and nothing may start: the rest never would
        end, _, ended = heapq.heappop(ends)
        clock = max(clock, end)
        plan.release(ended, *users.pop(ended))
        free += 1
    return out
