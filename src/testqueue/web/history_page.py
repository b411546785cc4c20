"""The history page: every execution, filtered and paginated, with trends per test case."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from testqueue.database import Conn
from testqueue.models import TestCase, User
from testqueue.services import executions
from testqueue.state import get_state
from testqueue.vocabulary import HistoryStatus, Result, parse_id
from testqueue.web import trends
from testqueue.web.render import PageRoute, page
from testqueue.web.session import CurrentViewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 25
CHOICES_SHOWN = 500


async def _choices(conn: Conn) -> tuple[list[Any], list[Any]]:
    """The test cases and users the filters offer."""
    cases = await conn.execute(
        select(TestCase.id, TestCase.title).order_by(TestCase.title).limit(CHOICES_SHOWN)
    )
    users = await conn.execute(select(User.id, User.username).order_by(User.username))
    return list(cases), list(users)


@router.get("/history")
async def show_history(
    request: Request,
    viewer: CurrentViewer,
    status: Annotated[str, Query(max_length=16)] = "",
    result: Annotated[str, Query(max_length=16)] = "",
    test_case: Annotated[str, Query(max_length=20)] = "",
    user: Annotated[str, Query(max_length=20)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    """Executions newest first; the filters are plain GET fields, so a filtered view is a link."""
    chosen_status = HistoryStatus(status) if status in set(HistoryStatus) else None
    chosen_result = Result(result) if result in set(Result) else None
    test_case_id = parse_id(test_case)
    user_id = parse_id(user)
    state = get_state(request)
    where = executions.history_filters(chosen_status, chosen_result, test_case_id, user_id)
    found = await executions.list_executions(
        state.db, where, PAGE_SIZE, (page_number - 1) * PAGE_SIZE
    )
    total = found.total
    async with state.db.read() as conn:
        cases, users = await _choices(conn)
        case_trends = await trends.trends(conn, test_case_id)
    query = {"status": status, "result": result, "test_case": test_case, "user": user}
    return page(
        request,
        "history.html",
        viewer,
        items=found.items,
        total=total,
        page_number=page_number,
        pages=max(1, -(-total // PAGE_SIZE)),
        query={k: v for k, v in query.items() if v},
        statuses=[s.value for s in HistoryStatus],
        results=[r.value for r in Result],
        cases=cases,
        users=users,
        names={row.id: row.username for row in users},
        trends=case_trends,
    )
