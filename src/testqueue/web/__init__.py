"""The dashboard: server-rendered pages beside the API, at `/`.

Plain HTML forms that work without JavaScript, a small script that submits
them in place and patches the page from Server-Sent Events, and a stylesheet;
all served from this package with no build step. Sign-in uses the API's
accounts through an HttpOnly cookie (see `session`).

    session      the cookie, the CSRF tokens, who is looking
    render       templates, filters, error pages, security headers
    queue_page   the queue and its actions      board, estimates   what it shows
    account_page your password, tokens, sessions
    admin_page   accounts and the audit trail (admins)
    cases_page   test cases                     case_form          their form
    schedules_page  schedules: list, form, pause, resume, delete
    history_page history and trends             trends, charts     its charts
    execution_page  one execution, its log live
    events       the SSE plumbing and the queue stream
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from testqueue.web import (
    account_page,
    admin_page,
    batch_page,
    cases_page,
    events,
    execution_page,
    history_page,
    queue_page,
    schedules_page,
    signin,
    suites_page,
    webhooks_page,
)
from testqueue.web.render import STATIC_DIR


def mount(app: FastAPI) -> None:
    """Add the dashboard's routes to `app`."""
    dashboard = APIRouter(include_in_schema=False)
    for module in (
        signin,
        queue_page,
        cases_page,
        history_page,
        suites_page,
        execution_page,
        account_page,
        admin_page,
        suites_page,
        schedules_page,
        batch_page,
        webhooks_page,
        events,
    ):
        dashboard.include_router(module.router)
    app.include_router(dashboard)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
