"""When a schedule fires: cron expressions in a time zone, read by croniter and zoneinfo.

A schedule's ticks are the instants whose local time in its zone matches
its expression. Daylight saving time is the zone's business: a local time
that does not exist that day (spring forward) fires at the first instant
after the gap, and a local time that happens twice (fall back) fires once,
at its first occurrence, unless the hour field is a wildcard (`*`, `*/2`):
then each real hour counts, as in Vixie cron. Every instant leaves here in
UTC.

Which tick to fire when a scheduler comes late (`due`): a tick is *missed*
when it is older than the grace on reaching it; the latest tick is fired
if it is not missed, or if the schedule catches up (`catch_up="last"`).

Imports nothing of ours, so the schemas, the services and the scheduler all
check and compute with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import (  # type: ignore[import-untyped]
    CroniterBadDateError,
    CroniterError,
    croniter,
)

MAX_CRON_CHARS = 100
MAX_ZONE_CHARS = 64
SECOND = timedelta(microseconds=1)
FIELDS = "minute hour day-of-month month day-of-week"


class CatchUp(StrEnum):
    """What a schedule does about ticks missed while no scheduler ran."""

    NONE = "none"  # skip them: the next tick is the next one in the future
    LAST = "last"  # fire once, for the latest missed tick


def check_cron(expression: str) -> str:
    """The expression with its spaces tidied; ValueError says what is wrong with it."""
    tidy = " ".join(expression.split())
    if not tidy:
        raise ValueError(f"give a cron expression of 5 fields ({FIELDS}), e.g. '0 6 * * 1-5'")
    if len(tidy) > MAX_CRON_CHARS:
        raise ValueError(f"a cron expression has at most {MAX_CRON_CHARS} characters")
    fields = tidy.split(" ")
    if not tidy.startswith("@") and len(fields) not in (5, 6):
        raise ValueError(
            f"{tidy!r} has {len(fields)} fields: give 5 ({FIELDS}), "
            "or 6 with seconds last, e.g. '0 6 * * 1-5'"
        )
    try:
        ticks = croniter(tidy, datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterError as exc:
        raise ValueError(f"{tidy!r} is not a cron expression croniter reads: {exc}") from exc
    try:
        ticks.get_next(datetime)
    except CroniterBadDateError as exc:
        raise ValueError(f"{tidy!r} never fires (no date matches it)") from exc
    return tidy


def check_zone(name: str) -> str:
    """An IANA time zone name zoneinfo knows; ValueError says what to give instead."""
    try:
        zone_of(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "Europe" is a folder
        raise ValueError(
            f"time zone {name[:MAX_ZONE_CHARS]!r} is unknown: give an IANA name such as "
            "'Europe/Berlin', 'America/New_York' or 'UTC'"
        ) from exc
    return name


def zone_of(name: str) -> ZoneInfo:
    if not name or len(name) > MAX_ZONE_CHARS or "\0" in name:
        raise ValueError(name)
    return ZoneInfo(name)


def ticks_after(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` ticks strictly after `after`, in UTC."""
    tz = zone_of(zone)
    found: list[datetime] = []
    ticks = croniter(expression, after.astimezone(tz))
    while len(found) < count:
        tick = _utc(ticks.get_next(datetime))
        if tick > after and not _repeat(expression, tick, tz):
            found.append(tick)
    return found


def shortest_gap_s(expression: str, zone: str, after: datetime, ticks: int = 10) -> float:
    """The shortest time between two of the next `ticks` ticks, in seconds."""
    found = ticks_after(expression, zone, after, ticks)
    return min((b - a).total_seconds() for a, b in pairwise(found))


def next_tick(expression: str, zone: str, after: datetime) -> datetime:
    """The first tick strictly after `after`, in UTC."""
    (tick,) = ticks_after(expression, zone, after, 1)
    return tick


def latest_tick(expression: str, zone: str, at: datetime) -> datetime:
    """The last tick at or before `at`, in UTC."""
    tz = zone_of(zone)
    ticks = croniter(expression, (at + SECOND).astimezone(tz))
    while True:
        tick = _utc(ticks.get_prev(datetime))
        if tick <= at and not _repeat(expression, tick, tz):
            return tick


def local(instant: datetime, zone: str) -> datetime:
    """`instant` as the schedule's zone shows it."""
    return instant.astimezone(zone_of(zone))


@dataclass(frozen=True)
class Due:
    """What to do about a schedule whose next tick has come: fire `fire` (or nothing),
    then wait for `next_at`; `missed` counts whether the tick chosen was late."""

    fire: datetime | None
    next_at: datetime
    missed: bool


def due(
    expression: str,
    zone: str,
    scheduled: datetime,
    now: datetime,
    grace: timedelta,
    catch_up: CatchUp,
) -> Due:
    """The tick to fire now for a schedule whose next tick, `scheduled`, is at or before `now`.

    The latest tick up to now is the candidate: ticks between `scheduled`
    and it are never fired (at most one batch per wake-up, never a flood).
    It fires if it is within `grace` of now, or, when missed, if the
    schedule catches up.
    """
    latest = max(scheduled, latest_tick(expression, zone, now))
    missed = now - latest > grace
    fire = latest if not missed or catch_up == CatchUp.LAST else None
    return Due(fire=fire, next_at=next_tick(expression, zone, max(now, latest)), missed=missed)


def _utc(tick: datetime) -> datetime:
    return tick.astimezone(UTC)


def _repeat(expression: str, tick: datetime, tz: ZoneInfo) -> bool:
    """Whether `tick` is the second occurrence of a local time (fall back) that fires once.

    croniter's `fold` is not reliable; converting from UTC sets it right.
    """
    if not tick.astimezone(tz).fold:
        return False
    hour_field = croniter(expression).expressions[1]
    return not str(hour_field).startswith("*")
