"""API request and response models, named by role."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    computed_field,
    field_serializer,
    field_validator,
    model_validator,
)

from testqueue.vocabulary import (
    HIGHEST_PRIORITY,
    LOWEST_PRIORITY,
    MAX_INT_ID,
    MAX_SLOTS,
    MAX_TAG_CHARS,
    MAX_TAGS_CHARS,
    PRIORITY_WORDS,
    TAG_PATTERN,
    PriorityWord,
    Role,
    RunnerKind,
    TestType,
    parse_priority,
)

MAX_ARGV_ITEMS = 256
MAX_ARG_CHARS = 4096
MAX_BULK_RUNS = 1000
MAX_PAGE_SIZE = 500
MAX_JSON_DEPTH = 100
MAX_URL_CHARS = 2000
WEB_SCHEMES = ("http://", "https://")


def _whole(value: object) -> object:
    """JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees); 3.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Whole numbers, strictly: `true` is not 1, nor "30" a number; 3.0 is 3.
_WHOLE = BeforeValidator(_whole)
SlotCount = Annotated[int, Field(strict=True, ge=1, le=MAX_SLOTS), _WHOLE]
TestCaseRef = Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID), _WHOLE]
TokenDays = Annotated[int, Field(strict=True, ge=1, le=3660), _WHOLE]


# A number 1..10 or a word; the schema says both, for clients to read.
Priority = Annotated[
    int,
    BeforeValidator(partial(parse_priority, digits_in_text=False)),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": HIGHEST_PRIORITY, "maximum": LOWEST_PRIORITY},
                {"type": "string", "enum": list(PRIORITY_WORDS)},
            ],
            "description": f"{HIGHEST_PRIORITY} (highest) to {LOWEST_PRIORITY}, or a word",
        }
    ),
]


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("an argument may not contain a NUL character")
    return value


def _no_nul_text(value: str) -> str:
    # PostgreSQL cannot store NUL in text: refuse it here rather than fail as a 500.
    if "\0" in value:
        raise ValueError("text may not contain a NUL character")
    return value


def _plain_json(value: Any) -> Any:
    """Refuse what a JSON column or the JSON answer cannot hold.

    Python's JSON reader takes NaN and Infinity, which PostgreSQL refuses; and
    pydantic cannot write a value nested past ~250 levels back out, so such a
    test case would be saved and then fail every read.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and Infinity are not JSON numbers")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


Argument = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS), AfterValidator(_no_nul)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS, pattern=TAG_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=100), AfterValidator(_no_nul_text)]
LongText = Annotated[str, StringConstraints(max_length=20_000), AfterValidator(_no_nul_text)]


def _utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Timestamped(BaseModel):
    @field_serializer("*", when_used="json")
    def _dates(self, value: Any) -> Any:
        return _utc(value) if isinstance(value, datetime) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- accounts ------------------------------------------------------------------------------


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
]


class UserCreate(Strict):
    username: Username
    password: Password
    role: Role = Role.MEMBER


class UserChange(Strict):
    """An admin's change to an account; fields left out stay as they are."""

    role: Role | None = None
    is_active: bool | None = Field(default=None, strict=True)


class PasswordChange(Strict):
    current_password: Annotated[str, StringConstraints(max_length=256)]
    new_password: Password


class PasswordReset(Strict):
    password: Password


class AccessTokenCreate(Strict):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_nul_text)
    ]
    expires_in_days: TokenDays | None = Field(
        default=None,
        description="days until the token stops working; none for no expiry",
    )


class AccessTokenPublic(Timestamped):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class AccessTokenCreated(AccessTokenPublic):
    token: str = Field(description="the token itself: shown this once, keep it now")


class AuditEntryPublic(Timestamped):
    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    total: int
    limit: int
    offset: int


class UserPublic(Timestamped):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


# -- test cases ----------------------------------------------------------------------------


class TestCaseFields(Strict):
    title: Annotated[
        str,
        StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
        AfterValidator(_no_nul_text),
    ]
    description: LongText = ""
    test_type: TestType = TestType.E2E
    priority: PriorityWord = PriorityWord.MEDIUM
    steps: Annotated[list[Any], AfterValidator(_plain_json)] = Field(
        default_factory=list, max_length=500
    )
    expected_result: LongText = ""
    preconditions: LongText = ""
    test_data: Annotated[dict[str, Any], AfterValidator(_plain_json)] = Field(default_factory=dict)
    runner: Annotated[str, StringConstraints(min_length=1, max_length=16)] = RunnerKind.COMMAND
    command: list[Argument] | None = Field(default=None, max_length=MAX_ARGV_ITEMS)
    # Strict: `true` is not one second, nor "30" a number.
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, allow_inf_nan=False, strict=True
    )
    required_tags: list[Tag] = Field(default_factory=list, max_length=20)

    @field_validator("test_data")
    @classmethod
    def _web_base_url(cls, data: dict[str, Any]) -> dict[str, Any]:
        # Runs copy their base_url from here (into a VARCHAR(2000)); a file: one would
        # let a browser test read the worker's disk through a relative `goto`.
        base_url = data.get("base_url")
        if base_url is None:
            return data
        if not (isinstance(base_url, str) and base_url.lower().startswith(WEB_SCHEMES)):
            raise ValueError("`base_url` must start with http:// or https://")
        if len(base_url) > MAX_URL_CHARS:
            raise ValueError(f"`base_url` may have at most {MAX_URL_CHARS} characters")
        return data

    @field_validator("required_tags")
    @classmethod
    def _tags_fit(cls, tags: list[str]) -> list[str]:
        stored = 1 + sum(len(tag) + 1 for tag in {t.lower() for t in tags})
        if stored > MAX_TAGS_CHARS:
            raise ValueError(
                f"the tags take {stored} characters together; at most {MAX_TAGS_CHARS}"
            )
        return tags

    @model_validator(mode="after")
    def _runner_fields(self) -> TestCaseFields:
        if self.runner == RunnerKind.COMMAND:
            if not self.command:
                raise ValueError("a command test case needs `command`: a non-empty argv list")
            if not self.command[0]:
                raise ValueError("`command[0]` (the program) may not be empty")
        return self


class TestCaseCreate(TestCaseFields):
    pass


class TestCaseUpdate(Strict):
    """Any subset of the fields; the others keep their values."""

    title: str | None = None
    description: str | None = None
    test_type: str | None = None
    priority: str | None = None
    steps: list[Any] | None = None
    expected_result: str | None = None
    preconditions: str | None = None
    test_data: dict[str, Any] | None = None
    runner: str | None = None
    command: list[Any] | None = None
    timeout_seconds: float | None = None
    required_tags: list[Any] | None = None


class TestCasePublic(Timestamped):
    id: int
    title: str
    description: str
    test_type: str
    priority: str
    steps: list[Any]
    expected_result: str
    preconditions: str
    test_data: dict[str, Any]
    runner: str
    command: list[str] | None
    timeout_seconds: float | None
    required_tags: list[str]
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = Field(
        default=None, description="when it was deleted; an archived test case cannot be run"
    )


class TestCasePage(BaseModel):
    items: list[TestCasePublic]
    total: int
    limit: int
    offset: int


# -- executions ----------------------------------------------------------------------------


class RunRequest(Strict):
    """How to run: all optional; priority defaults to the test case's."""

    priority: Priority | None = None
    browser: (
        Annotated[str, StringConstraints(max_length=32), AfterValidator(_no_nul_text)] | None
    ) = None
    environment: ShortText | None = None
    base_url: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_URL_CHARS, pattern=r"^https?://"),
            AfterValidator(_no_nul_text),
        ]
        | None
    ) = None
    triggered_by: ShortText | None = None


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


class ExecutionPublic(Timestamped):
    id: int
    test_case_id: int | None
    test_case_title: str | None = None
    user_id: int | None
    status: str
    result: str | None
    priority: int
    queue_position: int | None = None
    wait_reason: str | None = None
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
    steps: list[StepPublic] = Field(default_factory=list)
    artifacts: list[ArtifactPublic] = Field(default_factory=list)
    console_log: str | None = Field(
        default=None, description="the log's last 20,000 characters (detail only)"
    )


class ExecutionPage(BaseModel):
    items: list[ExecutionPublic]
    total: int
    limit: int
    offset: int


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
    queue_position: int
    queued_at: datetime
    attempt: int
    wait_reason: str


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
