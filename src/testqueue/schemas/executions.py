"""API models of runs, executions and the queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    computed_field,
)

from testqueue.schemas.common import (
    MAX_BULK_RUNS,
    MAX_URL_CHARS,
    BatchRef,
    NoNul,
    Priority,
    QueueTimeout,
    ShortText,
    SlotCount,
    Strict,
    TestCaseRef,
    Timestamped,
)

# -- executions ----------------------------------------------------------------------------


class RunFields(Strict):
    """How to run: all optional; priority defaults to the test case's."""

    priority: Priority | None = None
    browser: Annotated[str, StringConstraints(max_length=32), NoNul()] | None = None
    environment: ShortText | None = None
    base_url: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_URL_CHARS, pattern=r"^https?://"),
            NoNul(),
        ]
        | None
    ) = None
    triggered_by: ShortText | None = None
    queue_timeout_seconds: QueueTimeout | None = Field(
        default=None,
        description="seconds it may wait before it expires unstarted; 0 = no limit; "
        "default the test case's, else QUEUE_TIMEOUT",
    )


class RunRequest(RunFields):
    """How to run one (or, in bulk, many): all optional."""

    batch_id: BatchRef | None = Field(
        default=None, description="a batch to join; its verdict then counts this run"
    )
    dedupe: bool | None = Field(
        default=None,
        description="answer with the pending run of the same test case, environment and "
        "base URL if there is one, instead of queueing another; default the test case's",
    )


class BulkRunRequest(RunRequest):
    test_case_ids: list[TestCaseRef] = Field(min_length=1, max_length=MAX_BULK_RUNS)


class PriorityChange(Strict):
    priority: Priority


class QueueSettingsChange(Strict):
    max_concurrent: SlotCount | None = Field(
        description="global slots; null returns to the MAX_CONCURRENT_EXECUTIONS "
        "of the latest worker to start",
    )


class RunQueued(Timestamped):
    id: int
    test_case_id: int
    status: str
    priority: int
    queue_position: int
    message: str
    deduplicated: bool = Field(
        default=False, description="true: an equal pending run was found and is answered"
    )


class BulkQueued(BaseModel):
    executions: list[RunQueued]
    message: str


class StepPublic(BaseModel):
    number: int
    action: str
    description: str
    result: str
    duration_ms: float
    error_message: str | None
    screenshot: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def step_number(self) -> int:
        """`number`, under the name the seed system's clients read."""
        return self.number

    @computed_field  # type: ignore[prop-decorator]
    @property
    def step_description(self) -> str:
        """`description`, under the name the seed system's clients read."""
        return self.description


class ArtifactPublic(Timestamped):
    id: int
    kind: str
    name: str
    content_type: str
    size_bytes: int
    created_at: datetime
    url: str
    stored: bool = Field(
        default=True, description="false while its bytes are still being stored, or if not kept"
    )
    error: str | None = Field(
        default=None, description="why it was not kept (ARTIFACT_MAX_RUN_BYTES, say)"
    )


class ExecutionPublic(Timestamped):
    id: int
    test_case_id: int | None
    test_case_title: str | None = None
    user_id: int | None
    status: str
    result: str | None
    priority: int
    effective_priority: int | None = Field(
        default=None, description="while pending: the priority after aging, which the order uses"
    )
    queue_position: int | None = None
    wait_reason: str | None = None
    estimated_start: datetime | None = Field(
        default=None, description="while pending; null without history of its own test case"
    )
    estimated_finish: datetime | None = None
    concurrency_key: str | None = None
    expires_at: datetime | None = Field(
        default=None, description="while pending: when it expires unless it starts first"
    )
    attempt: int
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    wait_seconds: float | None = None
    run_seconds: float | None = None
    duration_seconds: float | None = None
    exit_code: int | None
    error_message: str | None
    cancel_requested: bool
    worker_id: str | None
    browser: str | None
    environment: str | None
    base_url: str | None
    triggered_by: str | None
    total_steps: int
    passed_steps: int
    failed_steps: int
    skipped_steps: int
    batch_id: int | None = None
    retries: int = 0
    retried: int = Field(default=0, description="retries used so far")
    flaky: bool = Field(default=False, description="passed, but only after a retry")
    steps: list[StepPublic] = Field(default_factory=list)
    artifacts: list[ArtifactPublic] = Field(default_factory=list)
    console_log: str | None = Field(
        default=None, description="the log's last 20,000 characters (detail only)"
    )


class AttemptPublic(Timestamped):
    """One attempt of an execution: how it ended, and where its log is."""

    attempt: int
    status: str = Field(description="`completed`, `retried`, `lost`, or the execution's own")
    result: str | None
    exit_code: int | None
    error_message: str | None
    started_at: datetime | None
    ended_at: datetime | None
    worker_id: str | None
    total_steps: int
    passed_steps: int
    failed_steps: int
    skipped_steps: int
    log_url: str
    steps: list[StepPublic] = Field(default_factory=list)
    artifacts: list[ArtifactPublic] = Field(default_factory=list)


class ExecutionPage(BaseModel):
    items: list[ExecutionPublic]
    total: int = Field(
        description="the matches, counted up to 10,000; past that 10,000 and `total_exact` false"
    )
    total_exact: bool = True
    limit: int
    offset: int
    has_more: bool = Field(default=False, description="older matches follow this page")
    next_before_id: int | None = Field(
        default=None, description="pass as `before_id` for the next (older) page"
    )


class Cancelled(BaseModel):
    id: int
    status: str
    message: str


class Cleared(BaseModel):
    message: str
    removed_count: int


class QueuedItem(Timestamped):
    execution_id: int
    test_case_id: int | None
    user_id: int | None
    priority: int
    effective_priority: int
    queue_position: int
    queued_at: datetime
    attempt: int
    wait_reason: str
    estimated_start: datetime | None
    estimated_finish: datetime | None
    concurrency_key: str | None = None
    expires_at: datetime | None = None


class ActiveItem(Timestamped):
    execution_id: int
    test_case_id: int | None
    user_id: int | None
    priority: int
    queued_at: datetime
    started_at: datetime | None
    attempt: int
    worker_id: str | None
    cancel_requested: bool
    estimated_finish: datetime | None = None


class ActiveExecutions(BaseModel):
    active_count: int
    max_concurrent: int
    executions: list[ActiveItem]


class QueueStatus(BaseModel):
    active_count: int
    queued_count: int
    max_concurrent: int
    is_under_limit: bool
    paused: bool
    limit: int
    offset: int
    queue: list[QueuedItem]
    active: list[ActiveItem]


class QueueStatistics(BaseModel):
    is_running: bool
    paused: bool
    max_concurrent: int
    check_interval: float
    queue_status: dict[str, Any]
    executions_by_status: dict[str, int]
    results: dict[str, int]
    live_workers: int


class WorkerPublic(Timestamped):
    id: str
    hostname: str
    pid: int
    capacity: int
    tags: list[str]
    started_at: datetime
    last_seen_at: datetime
    running: list[int]
    live: bool


class QueueSettingsPublic(BaseModel):
    max_concurrent: int = Field(description="the slots in force")
    max_concurrent_default: int = Field(
        description="the slots without an admin's runtime number: the "
        "MAX_CONCURRENT_EXECUTIONS of the latest worker to start"
    )
    paused: bool
