"""Shared field types and bases of the API models: bounded numbers, texts, priorities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    create_model,
    field_serializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from testqueue.vocabulary import (
    HIGHEST_PRIORITY,
    LOWEST_PRIORITY,
    MAX_BIGINT,
    MAX_CONCURRENCY_KEY_CHARS,
    MAX_CONCURRENCY_LIMIT,
    MAX_INT_ID,
    MAX_QUEUE_TIMEOUT_S,
    MAX_RETRIES,
    MAX_SLOTS,
    MAX_TAG_CHARS,
    MAX_TAGS_CHARS,
    PRIORITY_WORDS,
    TAG_PATTERN,
    check_key_template,
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
# 2**63 - 1 is no double: JSON Schema tools compare bounds as doubles and would take
# 2**63 as within it, so the schema states the largest double below (the check is exact).
_BIGINT_SCHEMA_MAX = 2**63 - 1024
BatchRef = Annotated[
    int,
    Field(strict=True, ge=1, le=MAX_BIGINT, json_schema_extra={"maximum": _BIGINT_SCHEMA_MAX}),
    _WHOLE,
]
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


NUL_FREE_PATTERN = r"^[^\x00]*$"


@dataclass(frozen=True)
class NoNul:
    """Text without a NUL character (PostgreSQL cannot store one): refused with a message
    in words, and stated in the schema as a pattern, beside any pattern of its own."""

    what: str = "text"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        described = handler(schema)
        if "pattern" in described:
            described.setdefault("allOf", []).append({"pattern": NUL_FREE_PATTERN})
        else:
            described["pattern"] = NUL_FREE_PATTERN
        return described

    def check(self, value: str) -> str:
        if "\0" in value:
            raise ValueError(f"{self.what} may not contain a NUL character")
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


Argument = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS), NoNul("an argument")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS, pattern=TAG_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=100), NoNul()]
LongText = Annotated[str, StringConstraints(max_length=20_000), NoNul()]


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


def problem_message(error: Any) -> str:
    """A pydantic error's message in plain words (without its "Value error, " prefix)."""
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def problem_text(error: Any) -> str:
    """One pydantic error as `where: what`, e.g. `tags.0: String should match ...`."""
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = problem_message(error)
    return f"{where}: {message}" if where else message


def partial_update(model: type[BaseModel], name: str, doc: str) -> type[Strict]:
    """An update of `model`: any subset of its fields, each with its own type and limits
    (null only where `model` takes null). The whole is checked again once merged with
    the values kept, so the rules across fields hold too."""
    fields: dict[str, Any] = {
        field_name: (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation,
            Field(
                default=None,
                description=field.description,
                json_schema_extra=field.json_schema_extra,
            ),
        )
        for field_name, field in model.model_fields.items()
    }
    made: type[Strict] = create_model(name, __base__=Strict, __doc__=doc, **fields)
    return made


def tags_fit(tags: list[str]) -> list[str]:
    """Tags are stored together, fenced by commas, in one column of MAX_TAGS_CHARS."""
    stored = 1 + sum(len(tag) + 1 for tag in {t.lower() for t in tags})
    if stored > MAX_TAGS_CHARS:
        raise ValueError(f"the tags take {stored} characters together; at most {MAX_TAGS_CHARS}")
    return tags


# Seconds a run may wait in the queue before it expires; 0 = no limit.
QueueTimeout = Annotated[
    float, Field(ge=0, le=MAX_QUEUE_TIMEOUT_S, allow_inf_nan=False, strict=True)
]
ConcurrencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CONCURRENCY_KEY_CHARS, strip_whitespace=True),
    NoNul(),
    AfterValidator(check_key_template),
]
ConcurrencyLimit = Annotated[int, Field(strict=True, ge=1, le=MAX_CONCURRENCY_LIMIT), _WHOLE]
