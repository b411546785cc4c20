"""The history page: every execution, filtered and paged by cursor, with trends per test case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from testqueue.database import Conn, Database
from testqueue.models import TestCase, User
from testqueue.schemas import ExecutionPage
from testqueue.services import executions
from testqueue.state import get_state
from testqueue.vocabulary import MAX_EXECUTION_ID, HistoryStatus, Result, parse_id
from testqueue.web import trends
from testqueue.web.render import PageRoute, page
from testqueue.web.session import CurrentViewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 25
# Pages by number reach as far as the counted window; further back the pager's cursor goes.
MAX_PAGE = executions.COUNT_WINDOW // PAGE_SIZE
CHOICES_SHOWN = 500


@dataclass(frozen=True)
class Cursor:
    """The pager's links: ids to read older or newer pages from, None where there are none."""

    older: int | None
    newer: int | None


async def _choices(conn: Conn) -> tuple[list[Any], list[Any]]:
    """The test cases and users the filters offer."""
    cases = await conn.execute(
        select(TestCase.id, TestCase.title).order_by(TestCase.title).limit(CHOICES_SHOWN)
    )
    users = await conn.execute(select(User.id, User.username).order_by(User.username))
    return list(cases), list(users)


def _execution_id(text: str) -> int | None:
    return parse_id(text, MAX_EXECUTION_ID)


async def _page(
    db: Database, where: list[Any], before: int | None, after: int | None, number: int
) -> tuple[ExecutionPage, Cursor]:
    """One page by cursor (`before`: older than; `after`: newer than), or by page number."""
    if after is not None:
        items, newer = await executions.newer_executions(db, where, PAGE_SIZE, after)
        # The page above `after` is the one that starts at its newest row; at the top,
        # it is the newest page.
        before = items[0].id + 1 if newer and items else None
    offset = 0 if before is not None else (number - 1) * PAGE_SIZE
    found = await executions.list_executions(db, where, PAGE_SIZE, offset, before_id=before)
    paged = before is not None or offset > 0
    newest = found.items[0].id if found.items and paged else None
    return found, Cursor(older=found.next_before_id, newer=newest)


@router.get("/history")
async def show_history(
    request: Request,
    viewer: CurrentViewer,
    status: Annotated[str, Query(max_length=16)] = "",
    result: Annotated[str, Query(max_length=16)] = "",
    test_case: Annotated[str, Query(max_length=20)] = "",
    user: Annotated[str, Query(max_length=20)] = "",
    before: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[str, Query(max_length=20)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=MAX_PAGE)] = 1,
) -> Response:
    """Executions newest first; the filters are plain GET fields, so a filtered view is a link.

    The pager walks by cursor (`before`, `after`: an execution id), so the
    thousandth page costs what the first does; `page` still skips by offset.
    """
    chosen_status = HistoryStatus(status) if status in set(HistoryStatus) else None
    chosen_result = Result(result) if result in set(Result) else None
    test_case_id = parse_id(test_case)
    user_id = parse_id(user)
    state = get_state(request)
    where = executions.history_filters(chosen_status, chosen_result, test_case_id, user_id)
    found, cursor = await _page(
        state.db, where, _execution_id(before), _execution_id(after), page_number
    )
    async with state.db.read() as conn:
        cases, users = await _choices(conn)
        case_trends = await trends.trends(conn, test_case_id)
    query = {"status": status, "result": result, "test_case": test_case, "user": user}
    return page(
        request,
        "history.html",
        viewer,
        items=found.items,
        total=found.total,
        total_exact=found.total_exact,
        cursor=cursor,
        query={k: v for k, v in query.items() if v},
        statuses=[s.value for s in HistoryStatus],
        results=[r.value for r in Result],
        cases=cases,
        users=users,
        names={row.id: row.username for row in users},
        trends=case_trends,
    )
