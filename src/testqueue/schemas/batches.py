"""API models of suites and batches: saved selections, and runs queued together."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from testqueue.schemas.common import (
    MAX_BULK_RUNS,
    NoNul,
    Priority,
    RetryCount,
    ShortText,
    Strict,
    SuiteRef,
    Tag,
    TestCaseRef,
    Timestamped,
    partial_update,
    tags_fit,
)
from testqueue.schemas.executions import RunFields, RunQueued
from testqueue.vocabulary import TagMode

SuiteName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoNul()
]
SuiteText = Annotated[str, StringConstraints(max_length=2000), NoNul()]


def _any_given(*required: tuple[str, JsonDict]) -> ConfigDict:
    """The schema states the model's rule that at least one of these fields selects something."""
    return ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [name], "properties": {name: rule}} for name, rule in required]
        }
    )


NOT_EMPTY: JsonDict = {"minItems": 1}


class SuiteFields(Strict):
    model_config = _any_given(("test_case_ids", NOT_EMPTY), ("tags", NOT_EMPTY))

    name: SuiteName
    description: SuiteText = ""
    test_case_ids: list[TestCaseRef] = Field(
        default_factory=list, max_length=MAX_BULK_RUNS, description="these test cases, in order"
    )
    tags: list[Tag] = Field(
        default_factory=list, max_length=20, description="and the test cases with these tags"
    )
    tag_mode: TagMode = Field(default=TagMode.ANY, description="`any` or `all` of the tags")

    @field_validator("tags")
    @classmethod
    def _fit(cls, tags: list[str]) -> list[str]:
        return tags_fit(tags)

    @model_validator(mode="after")
    def _selects_something(self) -> SuiteFields:
        if not self.test_case_ids and not self.tags:
            raise ValueError("a suite needs test_case_ids, tags, or both")
        return self


class SuiteCreate(SuiteFields):
    pass


if TYPE_CHECKING:
    SuiteUpdate = Strict
else:
    SuiteUpdate = partial_update(
        SuiteFields, "SuiteUpdate", "Any subset of the fields; the others keep their values."
    )


class SuitePublic(Timestamped):
    id: int
    name: str
    description: str
    test_case_ids: list[int]
    tags: list[str]
    tag_mode: TagMode
    created_by: int | None
    created_at: datetime
    updated_at: datetime


class SuitePage(BaseModel):
    items: list[SuitePublic]
    total: int
    limit: int
    offset: int


class BatchCreate(RunFields):
    """What to run (a suite, tags, test case ids: any mix) and how."""

    model_config = _any_given(
        ("suite_id", {"not": {"type": "null"}}), ("tags", NOT_EMPTY), ("test_case_ids", NOT_EMPTY)
    )

    suite_id: SuiteRef | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    tag_mode: TagMode = TagMode.ANY
    test_case_ids: list[TestCaseRef] = Field(default_factory=list, max_length=MAX_BULK_RUNS)
    name: ShortText | None = Field(default=None, description="a label; the default says what ran")
    retries: RetryCount | None = Field(default=None, description="instead of each test case's own")
    retry_on: list[Literal["fail", "error", "timeout"]] | None = Field(default=None, max_length=3)

    @model_validator(mode="after")
    def _selects_something(self) -> BatchCreate:
        if self.suite_id is None and not self.tags and not self.test_case_ids:
            raise ValueError("name what to run: suite_id, tags or test_case_ids")
        return self


class RerunRequest(Strict):
    only: Literal["failed", "all"] = Field(
        default="failed", description="`failed`: those that failed, errored or timed out"
    )
    priority: Priority | None = Field(
        default=None, description="default: one step higher than each run had"
    )


class BatchCounts(BaseModel):
    pending: int = 0
    running: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    timed_out: int = 0
    cancelled: int = 0
    expired: int = 0
    flaky: int = 0


class BatchPublic(Timestamped):
    id: int
    name: str
    suite_id: int | None
    rerun_of: int | None
    user_id: int | None
    status: str
    verdict: str | None = Field(description="once nothing waits or runs: pass, fail, ...")
    total: int
    done: int
    counts: BatchCounts
    environment: str | None
    base_url: str | None
    triggered_by: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class ExecutionRow(TypedDict):
    """One execution of a batch, as much as a batch's page, its report and the CI client show.

    Plain data, not a model: a release's batch writes a thousand of them at
    once (`services.batches` gives every time in UTC).
    """

    id: int
    test_case_id: int | None
    test_case_title: str | None
    status: str
    result: str | None
    flaky: bool
    attempt: int
    priority: int
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    run_seconds: float | None
    error_message: str | None


class BatchDetail(BatchPublic):
    executions: list[ExecutionRow]


class BatchPage(BaseModel):
    items: list[BatchPublic]
    total: int
    limit: int
    offset: int


class BatchQueued(BaseModel):
    batch: BatchPublic
    executions: list[RunQueued]
    message: str
