"""When schedules fire: cron in a time zone across DST, what "missed" means, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from testqueue.schedule_times import (
    CatchUp,
    check_cron,
    check_zone,
    due,
    latest_tick,
    local,
    next_tick,
    ticks_after,
)

BERLIN = "Europe/Berlin"
GRACE = timedelta(seconds=60)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_weekday_mornings_keep_their_local_hour_across_the_spring_change() -> None:
    """Berlin goes from UTC+1 to UTC+2 on 29 March 2026: 06:00 local moves from 05:00 to
    04:00 UTC, and the weekend is skipped."""
    ticks = ticks_after("0 6 * * 1-5", BERLIN, utc(2026, 3, 26, 12), 4)
    assert ticks == [
        utc(2026, 3, 27, 5),
        utc(2026, 3, 30, 4),
        utc(2026, 3, 31, 4),
        utc(2026, 4, 1, 4),
    ]
    assert [local(t, BERLIN).hour for t in ticks] == [6, 6, 6, 6]


def test_a_local_time_in_the_spring_gap_fires_once_right_after_it() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin: that day it fires at 03:00 CEST."""
    ticks = ticks_after("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 3)
    assert ticks == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_a_repeated_local_time_in_autumn_fires_once_for_a_fixed_hour() -> None:
    """02:30 happens twice on 25 October 2026 (CEST, then CET): a daily job runs once."""
    ticks = ticks_after("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_an_hourly_schedule_fires_every_real_hour_through_the_autumn_change() -> None:
    ticks = ticks_after("0 * * * *", BERLIN, utc(2026, 10, 24, 22, 30), 5)
    assert ticks == [utc(2026, 10, 24, 23) + timedelta(hours=h) for h in range(5)]
    assert [local(t, BERLIN).hour for t in ticks] == [1, 2, 2, 3, 4]


def test_the_next_and_the_latest_tick_bracket_an_instant() -> None:
    at = utc(2026, 12, 1, 5, 30)
    assert next_tick("0 6 * * 1-5", BERLIN, at) == utc(2026, 12, 2, 5)
    assert latest_tick("0 6 * * 1-5", BERLIN, at) == utc(2026, 12, 1, 5)
    assert latest_tick("0 6 * * 1-5", BERLIN, utc(2026, 12, 1, 5)) == utc(2026, 12, 1, 5)
    assert next_tick("* * * * * */2", "UTC", utc(2026, 12, 1, 5, 0, 1)) == utc(2026, 12, 1, 5, 0, 2)


def test_a_tick_reached_within_the_grace_fires_in_either_mode() -> None:
    tick = utc(2026, 12, 1, 5)
    for mode in CatchUp:
        plan = due("0 6 * * *", BERLIN, tick, tick + timedelta(seconds=59), GRACE, mode)
        assert (plan.fire, plan.missed, plan.next_at) == (tick, False, utc(2026, 12, 2, 5))


def test_missed_ticks_are_skipped_without_catch_up() -> None:
    """Down from Monday 05:00 UTC to Thursday 12:00: three ticks missed, none fired."""
    plan = due("0 6 * * *", BERLIN, utc(2026, 11, 30, 5), utc(2026, 12, 3, 12), GRACE, CatchUp.NONE)
    assert plan.fire is None
    assert plan.missed
    assert plan.next_at == utc(2026, 12, 4, 5)


def test_catch_up_last_fires_once_for_the_latest_missed_tick() -> None:
    plan = due("0 6 * * *", BERLIN, utc(2026, 11, 30, 5), utc(2026, 12, 3, 12), GRACE, CatchUp.LAST)
    assert (plan.fire, plan.missed, plan.next_at) == (
        utc(2026, 12, 3, 5),
        True,
        utc(2026, 12, 4, 5),
    )


def test_missed_means_older_than_the_grace_on_reaching_it() -> None:
    tick = utc(2026, 12, 1, 5)
    late = due("0 6 * * *", BERLIN, tick, tick + GRACE + timedelta(seconds=1), GRACE, CatchUp.NONE)
    on_time = due("0 6 * * *", BERLIN, tick, tick + GRACE, GRACE, CatchUp.NONE)
    assert (late.fire, late.missed) == (None, True)
    assert (on_time.fire, on_time.missed) == (tick, False)


def test_a_recent_tick_fires_even_when_older_ones_were_missed() -> None:
    """The latest tick is on time although the one the schedule waited for is long past."""
    now = utc(2026, 12, 3, 5, 0, 30)
    plan = due("0 6 * * *", BERLIN, utc(2026, 11, 30, 5), now, GRACE, CatchUp.NONE)
    assert (plan.fire, plan.missed) == (utc(2026, 12, 3, 5), False)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "give a cron expression"),
        ("* * *", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "not a cron expression"),
        ("a b c d e", "not a cron expression"),
        ("0 0 * * 8", "not a cron expression"),
        ("@reboot", "not a cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("*" * 200, "at most 100 characters"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_cron(expression)


def test_good_cron_expressions_come_back_tidy() -> None:
    assert check_cron("  0   6 * *   1-5 ") == "0 6 * * 1-5"
    assert check_cron("@daily") == "@daily"
    assert check_cron("0 0 29 2 *") == "0 0 29 2 *"  # every four years is still a tick
    assert check_cron("* * * * * */10") == "* * * * * */10"


@pytest.mark.parametrize(
    "name",
    ["Mars/Base", "", " UTC", "../../etc/passwd", "/etc/localtime", "x" * 300, "Europe", "Etc"],
)
def test_unknown_time_zones_are_refused_with_examples(name: str) -> None:
    with pytest.raises(ValueError, match="unknown: give an IANA name such as 'Europe/Berlin'"):
        check_zone(name)


def test_known_time_zones_pass() -> None:
    assert check_zone("Europe/Berlin") == "Europe/Berlin"
    assert check_zone("UTC") == "UTC"
