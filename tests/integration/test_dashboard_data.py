"""What the dashboard reads, on both databases: the board, run-time estimates, the live log."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from conftest import STAND_IN
from testqueue import queue
from testqueue.models import Execution, utcnow
from testqueue.queue import estimates
from testqueue.services.accounts import Actor
from testqueue.vocabulary import Progress, Role, Status
from testqueue.web import board
from testqueue.web.execution_page import LogFollower, _resume_point
from testqueue.web.session import Viewer


def _log_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of each `log` event in a piece of an event stream."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "log":
            found.append((fields.get("id", ""), json.loads(fields["data"])))
    return found


async def _save_log(api: Any, execution_id: int, text: str, cut: int = 0) -> None:
    async with api.state.db.write() as conn:
        await queue.save_progress(conn, [Progress(execution_id, log=text, cut_bytes=cut)])


async def test_the_live_log_sends_each_piece_once_across_a_reconnect(api_only: Any) -> None:
    await api_only.run(await api_only.command_test(["true"]))
    (claimed,) = await queue.settle(api_only.state.db, STAND_IN, [], 1)
    state, execution_id = api_only.state, claimed.id

    await _save_log(api_only, execution_id, "one\n")
    first = LogFollower(state, execution_id, 0, 0)
    assert _log_events(await first.next_event()) == [("4.0", {"text": "one\n"})]

    # The stream ends; the browser reconnects with the page's first URL
    # (chars=0) and sends the id of the last event it had.
    await _save_log(api_only, execution_id, "one\ntwo\n")
    again = LogFollower(state, execution_id, *_resume_point("4.0", 0, 0))
    assert _log_events(await again.next_event()) == [("8.0", {"text": "two\n"})]
    assert await again.next_event() == ""

    # A cut log is sent again whole, flagged as a reset.
    await _save_log(api_only, execution_id, "[cut]\nthree\n", cut=8)
    assert _log_events(await again.next_event()) == [
        ("12.8", {"reset": True, "text": "[cut]\nthree\n", "clipped": False})
    ]


def test_a_resume_point_comes_from_a_well_formed_event_id_only() -> None:
    assert _resume_point("120.7", 3, 0) == (120, 7)
    for bad in ("", "12", "x.1", "1.-2", "9" * 19 + ".0"):
        assert _resume_point(bad, 3, 0) == (3, 0), bad


async def test_the_board_and_its_fingerprint_follow_the_line(api_only: Any) -> None:
    admin = Viewer(Actor(1, "admin", Role.ADMIN), csrf="-")
    before = await board.fingerprint(api_only.state)
    test_id = await api_only.command_test(["true"], title="smoke")
    ids = [(await api_only.run(test_id))["id"] for _ in range(3)]
    await queue.settle(api_only.state.db, STAND_IN, [], 1)

    after = await board.fingerprint(api_only.state)
    shown = await board.build(api_only.state, admin)
    assert after != before
    assert (shown["busy"], shown["pending"]) == (1, 2)
    assert [r["id"] for r in shown["running"]] == ids[:1]
    assert [(r["id"], r["position"], r["title"]) for r in shown["line"]] == [
        (ids[1], 1, "smoke"),
        (ids[2], 2, "smoke"),
    ]
    assert await board.fingerprint(api_only.state) == after


async def test_recent_durations_take_medians_per_test_case_and_overall(api_only: Any) -> None:
    first = await api_only.command_test(["true"], title="first")
    second = await api_only.command_test(["true"], title="second")
    now = utcnow()
    runs = [(first, 1.0), (first, 3.0), (first, 8.0), (second, 20.0)]
    async with api_only.state.db.write() as conn:
        await conn.execute(
            insert(Execution),
            [
                {
                    "test_case_id": case_id,
                    "status": Status.COMPLETED,
                    "result": "pass" if seconds < 10 else "fail",
                    "priority": 5,
                    "queued_at": now,
                    "started_at": now,
                    "completed_at": now + timedelta(seconds=seconds),
                }
                for case_id, seconds in runs
            ],
        )
        durations = await estimates.recent_durations(conn, [first, second, None, 999])
    assert durations.by_test_case == {first: 3.0, second: 20.0}
    assert durations.overall == 5.5
    assert durations.own(999) is None
    assert durations.assumed(999) == 5.5
