"""Per process: wait for a wake-up, claim free slots, run, renew, record, release.

One loop does all the writing of a worker's lifecycle changes: each pass
records every run that finished since the last one and claims as many new
ones as fit, in one transaction (`queue.settle`). Runs are asyncio tasks that
append their outcome and wake the loop. A second loop beats: it renews the
leases, saves logs and steps, and hears of cancels from other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field, replace

from testqueue import artifacts, errors, journal, queue, retention, scheduler
from testqueue.config import Settings, host_key, worker_identity
from testqueue.database import Database
from testqueue.models import utcnow
from testqueue.queue import artifact_store, dialect, outbox
from testqueue.recorder import RunRecord
from testqueue.runners import Registry
from testqueue.runners.base import Runner, RunSpec
from testqueue.runners.processes import sweep_orphans
from testqueue.vocabulary import Outcome, Result
from testqueue.wakeups import first_of
from testqueue.webhooks import loop as webhooks_loop

log = logging.getLogger(__name__)

# A runner that has not returned this long after its deadline is abandoned.
HARD_STOP_MARGIN_S = 10.0
ARTIFACT_CLEANUP_EVERY_S = 3600.0
# How long a finished run's slot waits for its artifacts to be stored in the database;
# an upload still going on after it ends on its own (its file is served once whole).
UPLOAD_WAIT_S = 30.0
# After an unexpected error in a pass, wait this long before the next one.
ERROR_BACKOFF_S = 0.5
# A worker whose leases went unrenewed for this share of LEASE_TTL stops its runs:
# soon others may recover them, and a run must never go on in two places.
FENCE_SHARE = 0.75


@dataclass
class Run:
    """A run this process holds: its task, its cancel signal, what it reported."""

    claimed: queue.Claimed
    record: RunRecord
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    abandoned: bool = False  # lease lost or released: its outcome is not ours to record
    uploads: artifact_store.RunUploads | None = None  # with ARTIFACT_STORE=database


class Dispatcher:
    """Claims and runs executions for one worker process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        *,
        worker_id: str | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._registry = registry
        self.claimer = queue.Claimer(
            worker_id=worker_id or worker_identity(),
            default_slots=settings.max_concurrent_executions,
            lease_ttl_s=settings.lease_ttl,
            capacity=settings.worker_capacity,
            tags=frozenset(settings.worker_tags),
            policies=queue.Policies.of(settings),
        )
        self._host_key = host_key()
        self._cases = queue.CaseCache()
        self._runs: dict[int, Run] = {}
        self._finished: list[queue.Finished] = []
        self._journal: journal.Journal | None = None  # opened at start
        self._draining = False
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.scheduler = scheduler.Scheduler(settings, db)

    @property
    def is_running(self) -> bool:
        return bool(self._tasks) and not self._stopping.is_set()

    @property
    def running_ids(self) -> list[int]:
        return sorted(self._runs)

    async def start(self) -> None:
        """Sign in, recover what a dead predecessor on this host left, start the loops."""
        await self._recover_dead_neighbours()
        self._journal = journal.Journal(self._settings.journal_folder, self.claimer.worker_id)
        slots = self._settings.max_concurrent_executions
        replaced = await queue.declare_slots(self._db, slots)
        if replaced is not None:
            log.warning(
                "MAX_CONCURRENT_EXECUTIONS differs from the last worker's; every process now "
                "uses this one (give every host the same value, or set it at runtime)",
                extra={"slots": slots, "was": replaced},
            )
        await queue.register_worker(
            self._db, self.claimer, socket.gethostname(), os.getpid(), self._host_key
        )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cleanup_loop(), name="artifact-cleanup"),
            asyncio.create_task(self._expiry_loop(), name="queue-timeouts"),
            asyncio.create_task(
                webhooks_loop.deliver(self._settings, self._db, self._stopping), name="webhooks"
            ),
            asyncio.create_task(self.scheduler.run(self._stopping), name="schedules"),
            asyncio.create_task(
                retention.retention_loop(self._db, self._settings, self._stopping),
                name="retention",
            ),
            asyncio.create_task(
                dialect.of(self._db).listen(self._db, self._on_notify, self._stopping),
                name="listen",
            ),
        ]
        log.info("dispatcher started", extra={"worker_id": self.claimer.worker_id})

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; let runs finish for `grace_s`, then stop them and give them back."""
        grace = self._settings.shutdown_grace if grace_s is None else grace_s
        self._draining = True
        if self._runs:
            held = ", ".join(f"#{i}" for i in sorted(self._runs))
            runs = "execution" if len(self._runs) == 1 else "executions"
            log.info(
                f"waiting up to {grace:g} s for {len(self._runs)} running {runs}: {held}",
                extra={"running": sorted(self._runs), "grace_s": grace},
            )
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
        await self._abandon(list(self._runs.values()))
        self._stopping.set()
        self._db.wakeups.wake()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._abandon(list(self._runs.values()))  # started by a pass under way meanwhile
        with contextlib.suppress(Exception):
            await self._settle()
        released = await queue.release(self._db, self.claimer)
        if self._journal is not None:
            self._journal.close()
        await self._registry.close()
        log.info("dispatcher stopped", extra={"released": released})

    async def _abandon(self, runs: list[Run]) -> None:
        """Stop these runs and wait for them; their outcomes are not recorded."""
        for run in runs:
            run.abandoned = True
            run.cancel.set()
        await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)

    async def _recover_dead_neighbours(self) -> None:
        """Runs of a worker on this host whose process is gone need not wait out the lease.

        What it journaled as finished is recorded first; its leftover test
        processes are killed next, so a recovered run never starts beside its
        old copy.
        """
        boot = self.claimer.worker_id.rsplit(":", 1)[-1]
        for path, entries in journal.left_behind(self._settings.journal_folder, _pid_alive, boot):
            await self._record_journaled(entries)
            path.unlink(missing_ok=True)
        dead = await queue.dead_workers(self._db, self._host_key, _pid_alive)
        if dead:
            killed = await asyncio.to_thread(sweep_orphans, set(dead))
            recovered = await queue.expire_workers(self._db, dead, self._settings.max_attempts)
            log.info(
                "recovered dead workers",
                extra={"workers": dead, "orphans_killed": killed, "recovered": recovered},
            )

    async def _record_journaled(self, entries: list[journal.Entry]) -> None:
        """Record a gone worker's journaled finishes whose attempt is still the one running,
        as that worker would have; a run claimed again meanwhile (its lease ran out) is left
        alone, and said to have run again."""
        latest = {(e.worker_id, e.id, e.attempt): e for e in entries}
        for worker_id in {e.worker_id for e in latest.values()}:
            finished = [e.finished() for e in latest.values() if e.worker_id == worker_id]
            await queue.settle(self._db, replace(self.claimer, worker_id=worker_id), finished, 0)
        now = await queue.attempts_now(self._db, {e.id for e in latest.values()})

        def recorded(e: journal.Entry) -> bool:
            # Ended at its attempt, or (failed, with retries left) waiting as the next one.
            ended = now.get(e.id, (e.attempt, True))
            return ended == (e.attempt, True) or (e.retry and ended == (e.attempt + 1, False))

        again = sorted(e.id for e in latest.values() if not recorded(e))
        log.info(
            "recorded the finishes a gone worker journaled",
            extra={"journaled": len(latest), "ran_again": again},
        )
        if again:
            log.warning(
                "executions that had finished on a gone worker were claimed again before its "
                "journal was read (its lease ran out first): they ran again",
                extra={"executions": again},
            )

    def _on_notify(self, payload: str) -> None:
        if payload.startswith("cancel:"):
            self._db.wakeups.request_cancel(int(payload.removeprefix("cancel:")))
        elif payload == queue.DEADLINE_SIGNAL:
            self._db.wakeups.deadline_event.set()
        elif payload.startswith(outbox.SIGNAL_PREFIX):
            outbox.heard(self._db, payload)
        elif payload == scheduler.SIGNAL:
            self._db.wakeups.schedules_event.set()
        elif payload == dialect.RECONNECTED:
            self._db.wakeups.wake_all()
        elif payload == dialect.BOARD_SIGNAL:
            return  # runs started or expired elsewhere: no slot was freed
        elif payload != f"freed:{self.claimer.worker_id}":  # our own slots we refilled already
            self._db.wakeups.wake()

    async def _dispatch_loop(self) -> None:
        wakeup = self._db.wakeups.event
        interval = self._settings.queue_check_interval
        while not self._stopping.is_set():
            if not wakeup.is_set():
                # `timeout`, not `wait_for`: no task of its own, so a wake-up reaches this
                # pass in one turn of a busy loop, not three.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wakeup.wait()
            wakeup.clear()
            if self._stopping.is_set():
                return
            try:
                await self._settle()
            except Exception:
                log.exception("dispatch pass failed")
                await asyncio.sleep(ERROR_BACKOFF_S)
                wakeup.set()  # try again soon: finished runs wait to be recorded

    async def _settle(self) -> None:
        self._apply_cancels()
        finished, self._finished = self._finished, []
        want = 0 if self._draining else self.claimer.capacity - len(self._runs) + len(finished)
        if not finished and want <= 0:
            return
        try:
            claimed = await queue.settle(self._db, self.claimer, finished, want, self._cases)
        except BaseException:
            self._finished = finished + self._finished
            raise
        for done in finished:
            run = self._runs.get(done.id)
            if run is not None and run.claimed.attempt == done.attempt:
                del self._runs[done.id]
        for item in claimed:
            self._start_run(item)
        if finished and self._journal is not None:
            self._journal.recorded(finished)
        if not self._runs:
            self._idle.set()

    def _apply_cancels(self) -> None:
        for execution_id in self._db.wakeups.take_cancel_requests():
            run = self._runs.get(execution_id)
            if run is not None:
                run.cancel.set()

    def _start_run(self, claimed: queue.Claimed) -> None:
        previous = self._runs.get(claimed.id)
        if previous is not None and not previous.abandoned and not _done(previous.task):
            # Claimed again after its lease ran out while it still runs here
            # (heartbeats held up): the same run goes on, as the new attempt.
            previous.claimed = claimed
            previous.record.attempt = claimed.attempt
            return
        record = RunRecord(claimed.id, self._settings.log_max_bytes, claimed.attempt)
        run = Run(claimed, record, uploads=self._uploads_for(record))
        self._runs[claimed.id] = run
        # An old copy still stopping here must be gone before the new one starts.
        after = previous.task if previous is not None else None
        run.task = asyncio.create_task(self._execute(run, after), name=f"execution-{claimed.id}")

    async def _execute(self, run: Run, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            await asyncio.wait({after})
        outcome = await self._outcome_of(run)
        if run.uploads is not None:  # stored before the outcome, outside its transaction
            with contextlib.suppress(TimeoutError):  # a stuck upload must not hold the slot
                await asyncio.wait_for(run.uploads.wait(), UPLOAD_WAIT_S)
        if run.abandoned:
            if self._runs.get(run.claimed.id) is run:
                del self._runs[run.claimed.id]
            if not self._runs:
                self._idle.set()
            return
        done = run.claimed.ended(
            outcome.result,
            outcome.exit_code,
            outcome.error_message,
            run.record.step_counts(),
            run.record.final_progress(),
        )
        if self._journal is not None:
            self._journal.append(done)  # on disk in a moment, whatever this pass does
        self._finished.append(done)
        self._db.wakeups.wake()

    async def _outcome_of(self, run: Run) -> Outcome:
        try:
            spec = self._spec(run.claimed)
            runner: Runner = self._registry.get(spec.runner)
            deadline = asyncio.get_running_loop().time() + spec.timeout_s
            report = run.uploads or run.record
            # In this task (`timeout`, not `wait_for`): a quick run's outcome is back without
            # waiting for turns of a busy loop.
            async with asyncio.timeout(spec.timeout_s + HARD_STOP_MARGIN_S):
                return await runner.run(spec, deadline=deadline, cancel=run.cancel, report=report)
        except errors.TestqueueError as exc:
            return Outcome(Result.ERROR, error_message=exc.message)
        except TimeoutError:
            return Outcome(Result.TIMEOUT, error_message="the runner did not stop at its deadline")
        except Exception as exc:
            log.exception("runner crashed", extra={"execution_id": run.claimed.id})
            return Outcome(Result.ERROR, error_message=f"the runner crashed: {exc!r}")

    def _uploads_for(self, record: RunRecord) -> artifact_store.RunUploads | None:
        """Where a run's artifacts go when the database keeps them; None: the files stay."""
        if artifact_store.location_for(self._settings) != artifact_store.DATABASE:
            return None
        limit = self._settings.artifact_max_run_bytes
        return artifact_store.RunUploads(self._db, record, record.execution_id, limit)

    def _spec(self, claimed: queue.Claimed) -> RunSpec:
        case = claimed.case
        if case is None:
            raise errors.RunnerError("its test case was deleted before it could run")
        return RunSpec(
            execution_id=claimed.id,
            test_case_id=claimed.test_case_id,
            runner=case.runner,
            attempt=claimed.attempt,
            timeout_s=case.timeout_seconds or self._settings.execution_timeout,
            command=case.command,
            steps=case.steps or [],
            test_data=case.test_data or {},
            base_url=claimed.base_url,
            browser=claimed.browser,
            environment=claimed.environment,
            worker_id=self.claimer.worker_id,
        )

    async def _expiry_loop(self) -> None:
        """End pending runs at their queue deadline: sleep until the earliest one known."""
        wakeups = self._db.wakeups
        interval = self._settings.queue_check_interval
        while not self._stopping.is_set():
            wakeups.deadline_event.clear()
            wait_s = interval
            try:
                upcoming = await queue.next_deadline(self._db)  # a read; the write only when due
                if upcoming is not None and upcoming <= utcnow():
                    await queue.expire_due(self._db)
                    continue
                if upcoming is not None:
                    wait_s = min(interval, (upcoming - utcnow()).total_seconds())
            except Exception as exc:
                log.warning(
                    "queue timeouts could not be looked at", extra={"error": str(exc)[:300]}
                )
            if wait_s > 0:
                await first_of(wakeups.deadline_event, self._stopping, timeout=wait_s)

    async def _cleanup_loop(self) -> None:
        """Remove artifacts older than ARTIFACT_MAX_AGE_DAYS, at start and then hourly."""
        days = self._settings.artifact_max_age_days
        while days > 0 and not self._stopping.is_set():
            try:
                await asyncio.to_thread(artifacts.remove_older_than, self._settings, days)
            except OSError:
                log.exception("artifact clean-up failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=ARTIFACT_CLEANUP_EVERY_S)

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=self._settings.heartbeat_interval
                )
            if self._stopping.is_set():
                return
            try:
                await self._beat()
                renewed_at = loop.time()
                await self._recover_dead_neighbours()
            except Exception as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)[:300]})
                await self._fence(loop.time() - renewed_at)

    async def _fence(self, unrenewed_s: float) -> None:
        """Stop every run once the leases went unrenewed too long (see FENCE_SHARE)."""
        if not self._runs or unrenewed_s < self._settings.lease_ttl * FENCE_SHARE:
            return
        log.warning(
            "leases could not be renewed; stopping the runs held so none runs twice",
            extra={"unrenewed_s": round(unrenewed_s, 1), "running": sorted(self._runs)},
        )
        await self._abandon(list(self._runs.values()))

    async def _beat(self) -> None:
        held_before = dict(self._runs)
        progress = [p for r in held_before.values() if (p := r.record.take_progress())]
        try:
            beat = await queue.heartbeat(
                self._db, self.claimer, progress, self._settings.max_attempts, held_before
            )
        except BaseException:
            for item in progress:
                held_before[item.execution_id].record.restore(item)
            raise
        for execution_id, run in held_before.items():
            if execution_id not in self._runs:
                continue
            if execution_id not in beat.held:
                log.warning("lease lost", extra={"execution_id": execution_id})
                run.abandoned = True
                run.cancel.set()
            elif execution_id in beat.cancel:
                run.cancel.set()


def _done(task: asyncio.Task[None] | None) -> bool:
    return task is None or task.done()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
