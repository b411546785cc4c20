"""Settings, read once from the environment and `.env`, validated, then passed in.

Every setting is documented in `docs/settings.md`; keep the two in step.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from testqueue.vocabulary import MAX_QUEUE_TIMEOUT_S, MAX_SLOTS, FairShare

DEFAULT_DATABASE_URL = "sqlite:///./testqueue.db"


class Settings(BaseSettings):
    """The whole configuration of one testqueue process."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    sqlite_synchronous: str = Field(default="NORMAL", pattern="^(NORMAL|FULL)$")
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    max_concurrent_executions: int = Field(default=5, ge=1, le=MAX_SLOTS)
    queue_check_interval: float = Field(default=2.0, gt=0, le=3600)
    execution_timeout: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)
    max_attempts: int = Field(default=3, ge=1, le=100)
    fair_share: FairShare = FairShare.USER
    max_running_per_user: int = Field(default=0, ge=0, le=MAX_SLOTS)  # 0 = unlimited
    aging_seconds: float = Field(default=600.0, ge=0, le=7 * 24 * 3600)  # 0 = off
    queue_timeout: float = Field(default=0.0, ge=0, le=MAX_QUEUE_TIMEOUT_S)  # 0 = none
    max_pending: int = Field(default=0, ge=0)  # 0 = unlimited
    max_pending_per_user: int = Field(default=0, ge=0)  # 0 = unlimited
    lease_ttl: float = Field(default=10.0, ge=1, le=3600)
    heartbeat_interval: float = Field(default=1.0, gt=0, le=60)
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)
    kill_grace: float = Field(default=0.5, ge=0, le=60)
    worker_concurrency: int | None = Field(default=None, ge=1, le=MAX_SLOTS)
    worker_tags: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_max_bytes: int = Field(default=1_048_576, ge=1024, le=256 * 1_048_576)
    work_dir: Path | None = None
    journal_dir: Path | None = None
    artifacts_dir: Path = Path("./artifacts")
    artifact_max_age_days: float = Field(default=30.0, ge=0)
    # Where artifacts are kept: auto = the database on PostgreSQL, files on disk on SQLite.
    artifact_store: str = Field(default="auto", pattern="^(auto|database|disk)$")
    artifact_max_run_bytes: int = Field(default=50 * 1_048_576, ge=1, le=1 << 40)
    command_memory_limit_mb: int = Field(default=0, ge=0)
    chromium_path: str | None = None
    browser_recycle_after: int = Field(default=200, ge=1)
    secret_key: SecretStr | None = None
    access_token_ttl: int = Field(default=12 * 3600, ge=60, le=366 * 24 * 3600)
    testqueue_admin_password: SecretStr | None = None
    login_max_failures_per_user: int = Field(default=5, ge=1, le=10_000)
    login_max_failures_per_address: int = Field(default=20, ge=1, le=1_000_000)
    login_failure_window: float = Field(default=900.0, gt=0, le=7 * 24 * 3600)
    login_lockout: float = Field(default=60.0, gt=0, le=24 * 3600)
    password_hash_threads: int = Field(default=max(1, (os.cpu_count() or 2) // 2), ge=1, le=64)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_format: str = Field(default="auto", pattern="^(auto|json|text)$")
    log_level: str = "INFO"
    # Schedules (docs/schedules.md): a tick found later than the grace was missed; the
    # scheduler sleeps until the next tick or an edit, at most `schedule_check_interval`.
    schedule_grace: float = Field(default=60.0, ge=0, le=24 * 3600)
    schedule_check_interval: float = Field(default=300.0, gt=0, le=24 * 3600)
    schedule_min_interval: float = Field(default=60.0, ge=0, le=24 * 3600)
    # Webhooks (docs/webhooks.md): private addresses only when allowed; each request's
    # timeout; retries start at the base delay, double, and stop after `retry_for`.
    webhook_allow_private: bool = False
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_base: float = Field(default=10.0, gt=0, le=3600)
    webhook_retry_for: float = Field(default=24 * 3600.0, ge=0, le=30 * 24 * 3600)
    # Retention: finished executions older than this many days are pruned (0 = keep
    # forever), in batches of `prune_batch_size` ids per short transaction, every
    # `retention_interval` seconds by one worker at a time.
    retention_days: float = Field(default=90.0, ge=0, le=100 * 365)
    prune_batch_size: int = Field(default=500, ge=1, le=10_000)
    retention_interval: float = Field(default=3600.0, ge=1, le=7 * 24 * 3600)
    # Metrics (docs/metrics.md): GET /metrics answers a bearer `metrics_token` or a
    # client address in `metrics_allow` (CIDRs, comma-separated; loopback by default).
    metrics_token: SecretStr | None = Field(default=None, min_length=16, max_length=256)
    metrics_allow: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default=["127.0.0.0/8", "::1/128"], validate_default=True, max_length=100
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("DATABASE_URL must start with sqlite:// or postgresql+psycopg://")
        return value

    @field_validator("metrics_allow", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("worker_tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        if isinstance(value, str):
            return sorted({tag.strip() for tag in value.split(",") if tag.strip()})
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def worker_capacity(self) -> int:
        """How many runs this process may hold at once.

        Unset, the global slots alone bound it, so an admin who raises them at
        runtime is not held back by this process's start-up value.
        """
        return self.worker_concurrency or MAX_SLOTS

    @property
    def journal_folder(self) -> Path:
        """Where this host's workers of this database journal finished runs: `JOURNAL_DIR`,
        else a folder of `WORK_DIR` named for the database (two deployments on one host
        never read each other's)."""
        if self.journal_dir is not None:
            return self.journal_dir
        database = hashlib.sha256(self.database_url.encode()).hexdigest()[:12]
        return (self.work_dir or Path(tempfile.gettempdir())) / "testqueue-journal" / database


def host_key() -> str:
    """Where this process's pid means something: its machine's boot and its PID namespace.

    Two containers may share a hostname (host networking) and still number
    their processes apart; a pid is only ever judged among workers with the
    same key.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{boot}:{namespace}"


def worker_identity() -> str:
    """A unique id for this worker process: host, pid, and a digest of its `host_key`."""
    digest = hashlib.sha256(host_key().encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{os.getpid()}:{digest}"
