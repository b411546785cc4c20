"""The only code that changes an execution's lifecycle.

Every move is built from `vocabulary.TRANSITIONS` (`moves`) and guarded by
`status = :expected`; a move that finds the row elsewhere raises
`errors.InvalidTransition`. The order of the line is defined once
(`policy`: effective priority, fair share, then `queued_at` and id), and
positions are counted or replayed from it when read, never stored.

    enqueue     put runs in line                  changes    cancel, move in line
    batches     many runs as one, cancel them      retries    try again, keep each attempt
    claim       record finished, claim free slots  leases     heartbeat, recovery, hand-back
    take        the runs a claim starts            policy     the order: fair share, caps, aging
    line        the line's heads for the plan      forecast   the line replayed: estimates
    expiry      queue timeouts                     backpressure  pending limits
    new_run     a new run's columns, once          estimates  run times per test case
    progress    save logs, steps, artifacts        switches   pause, slots, clear
    order       the line's order and filters      positions  count a place in line
    status      read the queue                     dialect    what SQLite and PostgreSQL do apart
"""

from __future__ import annotations

from testqueue.queue.batches import NewBatch, cancel_batch, enqueue_batch, write_batch
from testqueue.queue.changes import cancel, cancel_pending_of, set_priority
from testqueue.queue.claim import CaseCache, Claimed, Claimer, Finished, settle
from testqueue.queue.enqueue import Queued, RunOptions, enqueue
from testqueue.queue.expiry import DEADLINE_SIGNAL, expire_due, next_deadline
from testqueue.queue.leases import (
    Beat,
    attempts_now,
    dead_workers,
    expire_workers,
    heartbeat,
    register_worker,
    release,
)
from testqueue.queue.policy import Policies
from testqueue.queue.positions import position_in, position_of
from testqueue.queue.progress import save_progress
from testqueue.queue.retries import wants_retry
from testqueue.queue.switches import clear, declare_slots, set_max_concurrent, set_paused

__all__ = [
    "DEADLINE_SIGNAL",
    "Beat",
    "CaseCache",
    "Claimed",
    "Claimer",
    "Finished",
    "NewBatch",
    "Policies",
    "Queued",
    "RunOptions",
    "attempts_now",
    "cancel",
    "cancel_batch",
    "cancel_pending_of",
    "clear",
    "dead_workers",
    "declare_slots",
    "enqueue",
    "enqueue_batch",
    "expire_due",
    "expire_workers",
    "heartbeat",
    "next_deadline",
    "position_in",
    "position_of",
    "register_worker",
    "release",
    "save_progress",
    "set_max_concurrent",
    "set_paused",
    "set_priority",
    "settle",
    "wants_retry",
    "write_batch",
]
