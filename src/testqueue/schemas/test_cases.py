"""API models of test cases."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from testqueue.schemas.common import (
    ALL_RETRY_RESULTS,
    MAX_ARGV_ITEMS,
    MAX_URL_CHARS,
    WEB_SCHEMES,
    Argument,
    ConcurrencyKey,
    ConcurrencyLimit,
    LongText,
    NoNul,
    QueueTimeout,
    RetryCount,
    RetryResult,
    Strict,
    Tag,
    Timestamped,
    partial_update,
    plain_json,
    tags_fit,
)
from testqueue.vocabulary import (
    PriorityWord,
    RunnerKind,
    TestType,
)

# -- test cases ----------------------------------------------------------------------------


class TestCaseFields(Strict):
    title: Annotated[
        str,
        StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
        NoNul(),
    ]
    description: LongText = ""
    test_type: TestType = TestType.E2E
    priority: PriorityWord = PriorityWord.MEDIUM
    steps: Annotated[list[Any], AfterValidator(plain_json)] = Field(
        default_factory=list, max_length=500
    )
    expected_result: LongText = ""
    preconditions: LongText = ""
    test_data: Annotated[dict[str, Any], AfterValidator(plain_json)] = Field(default_factory=dict)
    runner: Annotated[str, StringConstraints(min_length=1, max_length=16)] = RunnerKind.COMMAND
    command: list[Argument] | None = Field(
        default=None,
        max_length=MAX_ARGV_ITEMS,
        description="the argv of a command test case; its program first",
        json_schema_extra={"prefixItems": [{"minLength": 1}]},
    )
    # Strict: `true` is not one second, nor "30" a number.
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, allow_inf_nan=False, strict=True
    )
    required_tags: list[Tag] = Field(
        default_factory=list,
        max_length=20,
        description="worker tags a worker must all have to run it",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=20,
        description="labels to select it by (suites, batches); case-insensitive",
    )
    retries: RetryCount = Field(default=0, description="how often a failed run is tried again")
    retry_on: list[RetryResult] = Field(
        default_factory=lambda: list(ALL_RETRY_RESULTS),
        max_length=3,
        description="the results a run is tried again after",
    )
    concurrency_key: ConcurrencyKey | None = Field(
        default=None,
        description="runs with the same key share `concurrency_limit` places at once; "
        "may name fields of the run: {environment}, {base_url}, {browser}, "
        "{test_case_id}, {user_id}",
    )
    concurrency_limit: ConcurrencyLimit = Field(
        default=1, description="how many runs with one key may run at once"
    )
    queue_timeout_seconds: QueueTimeout | None = Field(
        default=None,
        description="seconds a run may wait before it expires unstarted; 0 = no limit; "
        "null = QUEUE_TIMEOUT",
    )
    dedupe: bool = Field(
        default=False,
        description="a run of it is answered with its pending twin (same environment and "
        "base URL) instead of queued again, unless the request says otherwise",
    )

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

    @field_validator("command")
    @classmethod
    def _program_named(cls, command: list[str] | None) -> list[str] | None:
        if command and not command[0]:
            raise ValueError("`command[0]` (the program) may not be empty")
        return command

    @field_validator("required_tags", "tags")
    @classmethod
    def _tags_fit(cls, tags: list[str]) -> list[str]:
        return tags_fit(tags)

    @model_validator(mode="after")
    def _runner_fields(self) -> TestCaseFields:
        if self.runner == RunnerKind.COMMAND and not self.command:
            raise ValueError("a command test case needs `command`: a non-empty argv list")
        return self


class TestCaseCreate(TestCaseFields):
    pass


if TYPE_CHECKING:
    TestCaseUpdate = Strict
else:
    TestCaseUpdate = partial_update(
        TestCaseFields, "TestCaseUpdate", "Any subset of the fields; the others keep their values."
    )


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
    tags: list[str]
    retries: int
    retry_on: list[str]
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    queue_timeout_seconds: float | None = None
    dedupe: bool = False
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
