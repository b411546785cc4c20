"""SQLAlchemy tables.

The `executions` row is the queue: its status, priority, `queued_at` and id are
everything the order needs, and a partial index keeps the pending ones in that
order so the claim and the position count read the index alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testqueue.vocabulary import (
    FAILED_RESULTS,
    FINAL_STATUSES,
    PriorityWord,
    Role,
    RunnerKind,
    Status,
    TestType,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stamp here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


PENDING = "status = 'pending'"
# The history filter `status=failed`, word for word: SQLite uses a partial index only for
# a query that repeats its condition. `|| ''` keeps the planners off the result index,
# whose three ranges would have to be merged and sorted.
FAILED = f"(result || '') IN ({', '.join(sorted(repr(r.value) for r in FAILED_RESULTS))})"
# Finished runs: the status index holds only these, so the claim's reads of pending and
# running rows never wander into it; a history query repeats the condition to use it.
FINISHED = f"status IN ({', '.join(sorted(repr(s.value) for s in FINAL_STATUSES))})"


def _partial(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index of only the rows `where` holds, the same on SQLite and PostgreSQL."""
    return Index(
        name, *columns, unique=unique, sqlite_where=text(where), postgresql_where=text(where)
    )


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.MEMBER)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TestCase(Base):
    __tablename__ = "test_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    test_type: Mapped[str] = mapped_column(String(16), default=TestType.E2E)
    priority: Mapped[str] = mapped_column(String(8), default=PriorityWord.MEDIUM)
    steps: Mapped[list[Any]] = mapped_column(default=list)
    expected_result: Mapped[str] = mapped_column(Text, default="")
    preconditions: Mapped[str] = mapped_column(Text, default="")
    test_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    runner: Mapped[str] = mapped_column(String(16), default=RunnerKind.COMMAND)
    command: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    timeout_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    required_tags: Mapped[str] = mapped_column(String(500), default="")
    # Labels people select by (suites, batches), fenced like required_tags.
    tags: Mapped[str] = mapped_column(String(500), default="")
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_on: Mapped[str] = mapped_column(String(100), default=",error,fail,timeout,")
    # Queue policies (migration 0008): a key template like "db-{environment}" and how
    # many runs with one key may run at once; how long a run may wait; dedupe by default.
    concurrency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    concurrency_limit: Mapped[int] = mapped_column(Integer, default=1)
    queue_timeout_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    dedupe: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Every write sets it; workers keep a test case they read until it changes.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Deleted test cases are archived: history keeps them, lists and runs do not.
    archived_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Execution(Base):
    __tablename__ = "executions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    test_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("test_cases.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    required_tags: Mapped[str] = mapped_column(String(500), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    browser: Mapped[str | None] = mapped_column(String(32), nullable=True)
    environment: Mapped[str | None] = mapped_column(String(100), nullable=True)
    base_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    triggered_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    passed_steps: Mapped[int] = mapped_column(Integer, default=0)
    failed_steps: Mapped[int] = mapped_column(Integer, default=0)
    skipped_steps: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("batches.id", ondelete="SET NULL"),
        nullable=True,
    )
    # Retries: how many it may have, after which results (fenced), how many it had.
    # `attempt` counts retries and lost workers alike; MAX_ATTEMPTS counts the latter.
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_on: Mapped[str] = mapped_column(String(100), default="")
    retried: Mapped[int] = mapped_column(Integer, default=0)
    flaky: Mapped[bool] = mapped_column(Boolean, default=False)
    # Queue policies (migration 0008): the key filled in from the run's fields, its
    # limit, and the instant past which a pending run expires instead of starting.
    concurrency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    concurrency_limit: Mapped[int] = mapped_column(Integer, default=1)
    queue_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Set on a run queued with dedupe: one pending run per test case, environment and URL.
    dedupe_key: Mapped[str | None] = mapped_column(String(1000), nullable=True)

    __table_args__ = (
        # The line itself: the claim and every position count walk this index.
        # `status` rides along so SQLite answers counts from the index alone.
        _partial("ix_executions_line", "priority", "queued_at", "id", "status", where=PENDING),
        # The line per priority and user: fair share walks it one user at a time.
        _partial("ix_executions_fair", "priority", "user_id", "queued_at", "id", where=PENDING),
        _partial(
            "ix_executions_keyed",
            "concurrency_key",
            where=f"{PENDING} AND concurrency_key IS NOT NULL",
        ),
        # A test case's pending runs: dedupe looks for a twin, deleting it cancels them.
        _partial("ix_executions_pending_case", "test_case_id", where=PENDING),
        _partial(
            "ux_executions_dedupe",
            "dedupe_key",
            where=f"{PENDING} AND dedupe_key IS NOT NULL",
            unique=True,
        ),
        _partial(
            "ix_executions_deadline", "expires_at", where=f"{PENDING} AND expires_at IS NOT NULL"
        ),
        _partial("ix_executions_running", "worker_id", where="status = 'running'"),
        Index("ix_executions_test_case", "test_case_id", "id"),
        Index("ix_executions_user", "user_id", "id"),
        Index("ix_executions_batch", "batch_id", "id"),
        # History at a million rows (migration 0012): each filter walks its own index
        # newest first, and retention finds the oldest finished runs without a scan.
        _partial("ix_executions_status", "status", "id", where=FINISHED),
        # The pending runs newest first, for history's `status=pending` pages.
        _partial("ix_executions_waiting", "id", where=PENDING),
        _partial("ix_executions_result", "result", "id", where="result IS NOT NULL"),
        _partial("ix_executions_failed", "id", where=FAILED),
        _partial("ix_executions_ended", "completed_at", "id", where="completed_at IS NOT NULL"),
    )


class ExecutionLog(Base):
    """The output of one attempt of an execution; earlier attempts keep theirs."""

    __tablename__ = "execution_logs"

    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    content: Mapped[str] = mapped_column(Text, default="")
    cut_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class ExecutionStep(Base):
    __tablename__ = "execution_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    number: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(String(8))
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    screenshot: Mapped[str | None] = mapped_column(String(500), nullable=True)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1000))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "disk": the file at `path` on the host that ran it; "database": its `artifact_chunks`.
    location: Mapped[str] = mapped_column(String(16), default="disk")
    # False while its chunks are being written: nothing half-stored is ever served.
    stored: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it was not kept


class ArtifactChunk(Base):
    """One piece of an artifact kept in the database, for hosts that share no disk."""

    __tablename__ = "artifact_chunks"

    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ExecutionAttempt(Base):
    """An attempt that ended without ending its execution: retried, or its worker lost."""

    __tablename__ = "execution_attempts"

    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime] = mapped_column(default=utcnow)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    passed_steps: Mapped[int] = mapped_column(Integer, default=0)
    failed_steps: Mapped[int] = mapped_column(Integer, default=0)
    skipped_steps: Mapped[int] = mapped_column(Integer, default=0)


class Suite(Base):
    """A named, saved selection of test cases: explicit ids and/or tags."""

    __tablename__ = "suites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    test_case_ids: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[str] = mapped_column(String(500), default="")
    tag_mode: Mapped[str] = mapped_column(String(8), default="any")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(Base):
    """Executions queued together, with one verdict; status and counts are read off them."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    suite_id: Mapped[int | None] = mapped_column(
        ForeignKey("suites.id", ondelete="SET NULL"), nullable=True
    )
    rerun_of: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("batches.id", ondelete="SET NULL"),
        nullable=True,
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    environment: Mapped[str | None] = mapped_column(String(100), nullable=True)
    base_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    triggered_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # What the executions pruned by retention counted (migration 0012), so the batch
    # keeps its counts, times and verdict once they are gone; the live runs add to it.
    pruned_passed: Mapped[int] = mapped_column(Integer, default=0)
    pruned_failed: Mapped[int] = mapped_column(Integer, default=0)
    pruned_errored: Mapped[int] = mapped_column(Integer, default=0)
    pruned_timed_out: Mapped[int] = mapped_column(Integer, default=0)
    pruned_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    pruned_expired: Mapped[int] = mapped_column(Integer, default=0)
    pruned_flaky: Mapped[int] = mapped_column(Integer, default=0)
    pruned_first_start: Mapped[datetime | None] = mapped_column(nullable=True)
    pruned_last_end: Mapped[datetime | None] = mapped_column(nullable=True)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    tags: Mapped[str] = mapped_column(String(500), default="")
    # The boot and PID namespace the pid belongs to: a pid means nothing elsewhere.
    host_key: Mapped[str] = mapped_column(String(100), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueState(Base):
    """One row: the switches an admin flips at runtime, shared by every process."""

    __tablename__ = "queue_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set by an admin
    # MAX_CONCURRENT_EXECUTIONS of the worker that started last (migration 0005).
    configured_slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineCount(Base):
    """Pending executions of one priority; kept by triggers on SQLite only (migration 0004)."""

    __tablename__ = "line_counts"

    priority: Mapped[int] = mapped_column(Integer, primary_key=True)
    pending: Mapped[int] = mapped_column(Integer)


class Session(Base):
    """A signed-in session: a token names it, and ending it revokes the token."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class AccessToken(Base):
    """A personal access token, for CI and scripts; only its SHA-256 is kept."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class LoginFailure(Base):
    """Failed sign-ins of one username or one client address within the window."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column()
    blocked_until: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEntry(Base):
    """Who did what that matters to others: cleared, paused, changed slots or accounts."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    actor_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AppSecret(Base):
    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class WebhookSubscription(Base):
    """Where to send which events (migration 0010); a member's hears only their own runs."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[str] = mapped_column(String(500))  # comma-fenced, like tags
    test_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("test_cases.id", ondelete="CASCADE"), nullable=True
    )
    suite_id: Mapped[int | None] = mapped_column(
        ForeignKey("suites.id", ondelete="CASCADE"), nullable=True
    )
    tag: Mapped[str | None] = mapped_column(String(100), nullable=True)
    payload_format: Mapped[str] = mapped_column(String(16), default="json")
    own_runs_only: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


WEBHOOK_PENDING = "state = 'pending'"


class WebhookDelivery(Base):
    """One event for one subscription, written in the transaction of the change it reports.

    The lifecycle facts are copied as they were at that moment; `state` is
    `pending` until it is `delivered` or, after its retries, `failed`.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(32))
    # What the event is about ("execution:12", "batch:3", "queue"): its events go out in order.
    subject: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    )
    batch_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("batches.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    )
    test_case_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    leased_until: Mapped[datetime | None] = mapped_column(nullable=True)
    # Retries go on until this long after `since` (created, or sent again by hand).
    since: Mapped[datetime] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        _partial("ix_webhook_deliveries_due", "next_attempt_at", "id", where=WEBHOOK_PENDING),
        _partial(
            "ix_webhook_deliveries_subject",
            "subscription_id",
            "subject",
            "id",
            where=WEBHOOK_PENDING,
        ),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
        # One batch.finished per subscription and batch (`queue.outbox`).
        _partial(
            "ux_webhook_deliveries_batch_finished",
            "subscription_id",
            "batch_id",
            where="event = 'batch.finished'",
            unique=True,
        ),
    )


class WebhookAttempt(Base):
    """One try of a delivery: what the receiver answered, how long it took, or the error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        index=True,
    )
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)


class Schedule(Base):
    """A batch to queue on a cron expression in a time zone, owned by who made it.

    `next_fire_at` is the tick the schedulers wait for (NULL while paused);
    moving it is how one of them claims a tick (migration 0009).
    """

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    catch_up: Mapped[str] = mapped_column(String(8), default="none")
    # What each tick queues: the fields of a batch request (`schemas.batches.BatchCreate`).
    batch: Mapped[dict[str, Any]] = mapped_column(default=dict)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    next_fire_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScheduleFire(Base):
    """One tick of a schedule, fired once across every host: the unique key is the proof.

    Written in the transaction that queues its batch; `batch_id` is NULL when
    the tick queued nothing, and `error` says why.
    """

    __tablename__ = "schedule_fires"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    due_at: Mapped[datetime] = mapped_column()
    batch_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("batches.id", ondelete="SET NULL"),
        nullable=True,
    )
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    missed: Mapped[bool] = mapped_column(Boolean, default=False)  # fired late, by catch_up
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (UniqueConstraint("schedule_id", "due_at", name="uq_schedule_fires_tick"),)


class Tally(Base):
    """One kept count: finished executions by status and result, ever finished, cancelled,
    expired, flaky, retried, and the wait and run histograms' buckets.

    Triggers on `executions` keep them in the transaction of every change
    (migration 0011); `queue.counts` reads them.
    """

    __tablename__ = "tallies"

    family: Mapped[str] = mapped_column(String(16), primary_key=True)
    label: Mapped[str] = mapped_column(String(32), primary_key=True)
    detail: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    sum_s: Mapped[float] = mapped_column(Float)


class TallyDelta(Base):
    """A change to a tally not yet folded into `tallies`: PostgreSQL's triggers append
    these, so writers on many hosts never wait on one shared row."""

    __tablename__ = "tally_deltas"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    family: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(32))
    n: Mapped[int] = mapped_column(BigInteger)
    sum_s: Mapped[float] = mapped_column(Float)
