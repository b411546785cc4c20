"""Shared field types and bases of the API models: bounded numbers, texts, priorities."""

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
    field_serializer,
)

from testqueue.vocabulary import (
    HIGHEST_PRIORITY,
    LOWEST_PRIORITY,
    MAX_BIGINT,
    MAX_INT_ID,
    MAX_RETRIES,
    MAX_SLOTS,
    MAX_TAG_CHARS,
    PRIORITY_WORDS,
    TAG_PATTERN,
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
BatchRef = Annotated[int, Field(strict=True, ge=1, le=MAX_BIGINT), _WHOLE]
SuiteRef = Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID), _WHOLE]
RetryCount = Annotated[int, Field(strict=True, ge=0, le=MAX_RETRIES), _WHOLE]
# Which results a run is tried again after.
RetryResult = Literal["fail", "error", "timeout"]
ALL_RETRY_RESULTS: tuple[RetryResult, ...] = ("fail", "error", "timeout")


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


def no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("an argument may not contain a NUL character")
    return value


def no_nul_text(value: str) -> str:
    # PostgreSQL cannot store NUL in text: refuse it here rather than fail as a 500.
    if "\0" in value:
        raise ValueError("text may not contain a NUL character")
    return value


def plain_json(value: Any) -> Any:
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


Argument = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS), AfterValidator(no_nul)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS, pattern=TAG_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=100), AfterValidator(no_nul_text)]
LongText = Annotated[str, StringConstraints(max_length=20_000), AfterValidator(no_nul_text)]


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
