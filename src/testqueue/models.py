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
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testqueue.vocabulary import PriorityWord, Role, RunnerKind, Status, TestType


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stamp here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


PENDING = "status = 'pending'"


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
