"""API models of schedules: a batch request queued on a cron expression in a time zone."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, WithJsonSchema

from testqueue.schedule_times import MAX_CRON_CHARS, MAX_ZONE_CHARS, CatchUp, check_cron, check_zone
from testqueue.schemas.batches import BatchCreate, BatchPublic
from testqueue.schemas.common import NoNul, Strict, Timestamped, partial_update

ScheduleName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoNul()
]


def _field(value: str) -> str:
    """One cron field as the schema states it: items (`*`, a value or a range, each with an
    optional step), separated by commas."""
    item = rf"(\*|({value})(-({value}))?)(/[1-9][0-9]?)?"
    return rf"{item}(,{item})*"


_SIXTY = r"[1-5]?[0-9]"
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAYS = "sun|mon|tue|wed|thu|fri|sat"
# What the schema promises is a cron expression; the check (`schedule_times.check_cron`)
# also takes upper-case names and refuses one that never fires (`0 0 30 2 *`).
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + " ".join(
        _field(v)
        for v in (_SIXTY, r"1?[0-9]|2[0-3]", r"[1-9]|[12][0-9]|3[01]", rf"[1-9]|1[0-2]|{_MONTHS}")
    )
    + f" {_field(rf'[0-7]|{_DAYS}')}( {_field(_SIXTY)})?)$"
)
Cron = Annotated[
    str,
    StringConstraints(max_length=MAX_CRON_CHARS * 4),
    NoNul(),
    AfterValidator(check_cron),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_CRON_CHARS,
            "pattern": CRON_PATTERN,
            "description": "5 fields (minute hour day-of-month month day-of-week), or 6 "
            "with seconds last; `@daily` and the like too",
            "examples": ["0 6 * * 1-5"],
        }
    ),
]
Zone = Annotated[
    str,
    StringConstraints(max_length=MAX_ZONE_CHARS * 4),
    NoNul(),
    AfterValidator(check_zone),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(available_timezones()),
            "description": "an IANA time zone name",
            "examples": ["Europe/Berlin"],
        }
    ),
]


class ScheduleFields(Strict):
    name: ScheduleName
    cron: Cron
    timezone: Zone = "UTC"
    catch_up: CatchUp = Field(
        default=CatchUp.NONE,
        description="ticks missed while no worker ran: `none` skips them, `last` fires "
        "once for the latest",
    )
    run: BatchCreate = Field(
        description="the batch each tick queues: what (suite_id, tags, test_case_ids) "
        "and how (priority, environment, base_url, ...); its name defaults to the schedule's"
    )


class ScheduleCreate(ScheduleFields):
    paused: bool = Field(default=False, description="made paused: it fires once resumed")


if TYPE_CHECKING:
    ScheduleUpdate = Strict
else:
    ScheduleUpdate = partial_update(
        ScheduleFields,
        "ScheduleUpdate",
        "Any subset of the fields; `run` is replaced whole. A new cron or time zone "
        "starts from the next tick after now.",
    )


class FireTime(Timestamped):
    utc: datetime
    local: str = Field(description="the same instant in the schedule's zone, ISO 8601")


class ScheduleFirePublic(Timestamped):
    """One tick fired: the batch it queued, or why it queued none."""

    due_at: datetime
    fired_at: datetime
    missed: bool = Field(description="true: fired late, for a tick missed (catch_up last)")
    batch_id: int | None
    error: str | None
    batch: BatchPublic | None


class SchedulePublic(Timestamped):
    id: int
    name: str
    owner_id: int
    owner: str | None
    cron: str
    timezone: str
    catch_up: CatchUp
    run: BatchCreate
    paused: bool
    next_fire_at: datetime | None
    next_fire_times: list[FireTime] = Field(description="the next five ticks; none while paused")
    last_error: str | None
    last_fires: list[ScheduleFirePublic] = Field(description="the latest ticks, newest first")
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[SchedulePublic]
    total: int
    limit: int
    offset: int
