"""The live queue board: one broadcaster per process, told of every change, silent when idle.

Driven directly (an in-process HTTP client buffers a stream whole), on both
databases; a second `Database` on the same database stands for another
process or host, whose changes reach this one by NOTIFY (PostgreSQL) or by
the write-ahead log (SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from conftest import STAND_IN, Api
from testqueue import queue
from testqueue.database import Database
from testqueue.services.accounts import Actor
from testqueue.vocabulary import Role
from testqueue.web import live
from testqueue.web.session import Viewer

TABS = 100
TOLD_WITHIN_S = 10.0
# How long the idle queue is watched for statements: several of the broadcaster's looks at
# a SQLite log, and far longer than the dashboards' old twice-a-second poll.
IDLE_WINDOW_S = 5 * live.SQLITE_LOOK_S


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process sends meanwhile."""
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


@contextlib.asynccontextmanager
async def tabs(
    broadcaster: live.Broadcaster, viewers: list[Viewer]
) -> AsyncIterator[list[live.Watcher]]:
    watchers = [live.Watcher(v) for v in viewers]
    async with contextlib.AsyncExitStack() as stack:
        for watcher in watchers:
            await stack.enter_async_context(broadcaster.watching(watcher))
        yield watchers


async def next_board(broadcaster: live.Broadcaster, watcher: live.Watcher) -> dict[str, Any]:
    """The next board this tab is told of (waiting for the news, with a deadline)."""
    async with asyncio.timeout(TOLD_WITHIN_S):
        while True:
            await watcher.news.wait()
            text = await broadcaster.message(watcher)
            if text:
                data = text.split("data: ", 1)[1].split("\n", 1)[0]
                return dict(json.loads(data))


def viewers(count: int) -> list[Viewer]:
    """Admin and one member, taking turns."""
    admin = Viewer(Actor(1, "admin", Role.ADMIN), csrf="-")
    member = Viewer(Actor(2, "member", Role.MEMBER), csrf="-")
    return [admin if n % 2 == 0 else member for n in range(count)]


async def test_a_hundred_tabs_read_each_change_once_and_nothing_while_idle(
    api_only: Api,
) -> None:
    await api_only.member()
    case_id = await api_only.gate_test()
    broadcaster = live.Broadcaster(api_only.state)
    async with tabs(broadcaster, viewers(TABS)) as watchers:
        first = [await next_board(broadcaster, w) for w in watchers]
        assert all(b["pending"] == 0 for b in first)
        assert broadcaster.reads == 1

        # An idle queue: no statement at all, whatever the number of tabs.
        with statements() as sent:
            await asyncio.sleep(IDLE_WINDOW_S)
        assert sent == []

        queued = await api_only.run(case_id)
        boards = [await next_board(broadcaster, w) for w in watchers]
        assert {b["pending"] for b in boards} == {1}
        assert {b["line"][0]["id"] for b in boards} == {queued["id"]}
        # Read once for all hundred; each tab sees what it may do (the admin may change it).
        assert broadcaster.reads == 2
        assert [b["line"][0]["can_change"] for b in boards[:2]] == [True, False]

        # A run starts: told again, read once more.
        await queue.settle(api_only.state.db, STAND_IN, [], 1)
        started = await next_board(broadcaster, watchers[0])
        assert [r["id"] for r in started["running"]] == [queued["id"]]
        assert broadcaster.reads == 3


async def test_changes_made_by_another_process_reach_the_board(api_only: Api) -> None:
    """Another `Database` on the same database: its wake-ups are not this process's."""
    case_id = await api_only.gate_test()
    broadcaster = live.Broadcaster(api_only.state)
    other = Database(api_only.state.settings)
    try:
        async with tabs(broadcaster, viewers(2)) as watchers:
            assert (await next_board(broadcaster, watchers[0]))["pending"] == 0
            options = queue.RunOptions()
            (queued,) = await queue.enqueue(other, [case_id], 1, options)
            board = await next_board(broadcaster, watchers[0])
            assert [r["id"] for r in board["line"]] == [queued.id]

            # A start elsewhere (a worker on another host) moves the board too.
            await queue.settle(other, STAND_IN, [], 1)
            board = await next_board(broadcaster, watchers[0])
            assert [r["id"] for r in board["running"]] == [queued.id]
            assert board["pending"] == 0
    finally:
        await other.dispose()


async def test_the_broadcast_stops_with_its_last_tab_and_starts_again(api_only: Api) -> None:
    case_id = await api_only.gate_test()
    broadcaster = live.Broadcaster(api_only.state)
    async with tabs(broadcaster, viewers(1)) as (watcher,):
        await next_board(broadcaster, watcher)
    reads = broadcaster.reads
    # Nobody watches: a change is not read.
    await api_only.run(case_id)
    await asyncio.sleep(IDLE_WINDOW_S)
    assert broadcaster.reads == reads
    async with tabs(broadcaster, viewers(1)) as (watcher,):
        board = await next_board(broadcaster, watcher)
        assert board["pending"] == 1
        await api_only.run(case_id)
        assert (await next_board(broadcaster, watcher))["pending"] == 2
    assert broadcaster.reads == reads + 2
