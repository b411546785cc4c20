"""What wakes which loop: a reopened notification channel wakes every one of them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.queue import dialect
from testqueue.runners import Registry
from testqueue.wakeups import Wakeups, first_of


def _settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'testqueue.db'}")


def _events(wakeups: Wakeups) -> list[asyncio.Event]:
    return [
        wakeups.event,
        wakeups.deadline_event,
        wakeups.schedules_event,
        wakeups.delivery_event,
    ]


async def test_a_reconnected_channel_wakes_every_loop_and_forgets_the_subscriptions(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    db = Database(settings)
    try:
        dispatcher = Dispatcher(settings, db, Registry(settings))
        db.wakeups.webhook_events = (0.0, frozenset({"execution.finished"}))
        dispatcher._on_notify(dialect.RECONNECTED)
        assert all(event.is_set() for event in _events(db.wakeups))
        assert db.wakeups.webhook_events is None
    finally:
        await db.dispose()


async def test_an_ordinary_notice_wakes_only_the_dispatcher(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    db = Database(settings)
    try:
        Dispatcher(settings, db, Registry(settings))._on_notify("")
        assert [event.is_set() for event in _events(db.wakeups)] == [True, False, False, False]
    finally:
        await db.dispose()


async def test_first_of_returns_when_one_event_is_set_or_the_time_is_up() -> None:
    one, other = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_soon(one.set)
    await first_of(one, other)
    assert one.is_set() and not other.is_set()
    await first_of(other, timeout=0.01)  # returns: nothing set, the time ran out
    assert not other.is_set()
