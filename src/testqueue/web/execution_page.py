"""One execution: status, timings, steps with screenshots, and its log following live.

While the execution is pending or running, the page listens on
`/events/executions/{id}`: a `detail` event carries the re-rendered facts
and steps whenever they change, a `log` event carries only the text added
since the last one (or the tail again when the log was cut), and `end`
says nothing will change any more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import and_, bindparam, case, func, select

from testqueue import errors, sse
from testqueue.database import Conn
from testqueue.models import Artifact, Execution, ExecutionLog, ExecutionStep
from testqueue.params import ArtifactId, ExecutionId
from testqueue.queue import position_of
from testqueue.schemas import ExecutionPublic
from testqueue.services import executions
from testqueue.state import AppState, get_state
from testqueue.vocabulary import FINAL_STATUSES, MAX_BIGINT, Status, parse_whole
from testqueue.web.render import PageRoute, page, templates
from testqueue.web.session import CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

E = Execution
# The most log text one page load or one event carries; the rest is a link away.
LOG_SHOWN_CHARS = 100_000


async def _username(state: AppState, user_id: int | None) -> str:
    return (await state.accounts.usernames({user_id})).get(user_id or 0, "-")


def _context(detail: ExecutionPublic, viewer: Viewer, owner: str) -> dict[str, Any]:
    live = detail.status not in FINAL_STATUSES
    return {
        "ex": detail,
        "owner": owner,
        "shots": {a.name: a for a in detail.artifacts if a.content_type.startswith("image/")},
        "can_change": live and (viewer.is_admin or detail.user_id == viewer.id),
        "live": live,
    }


def _current_attempt(execution_id: Any) -> Any:
    """The attempt an execution is at now: its log and steps are the ones shown."""
    return select(E.attempt).where(E.id == execution_id).scalar_subquery()


def _tail_statement() -> Any:
    """The log's length in characters, its cut, and its last `LOG_SHOWN_CHARS`.

    One statement, so the three agree even where each statement reads its own
    snapshot (PostgreSQL): a length read apart from the text would make the
    page's stream send some text twice.
    """
    length = func.length(ExecutionLog.content)
    start = case((length > LOG_SHOWN_CHARS, length - LOG_SHOWN_CHARS + 1), else_=1)
    return select(length, ExecutionLog.cut_bytes, func.substr(ExecutionLog.content, start)).where(
        ExecutionLog.execution_id == bindparam("execution_id"),
        ExecutionLog.attempt == _current_attempt(bindparam("execution_id")),
    )


_TAIL = _tail_statement()


async def _log_tail(conn: Conn, execution_id: int) -> tuple[str, int, int]:
    """The last `LOG_SHOWN_CHARS` of the log, its full length in characters, and its cut."""
    row = (await conn.execute(_TAIL, {"execution_id": execution_id})).one_or_none()
    if row is None:
        return "", 0, 0
    return str(row[2] or ""), int(row[0] or 0), int(row[1] or 0)


@router.get("/executions/{execution_id:int}")
async def show_execution(
    request: Request, execution_id: ExecutionId, viewer: CurrentViewer
) -> Response:
    """One execution; its log and steps follow live while it runs."""
    state = get_state(request)
    detail = await executions.execution_detail(state.db, state.settings, execution_id)
    async with state.db.read() as conn:
        text, length, cut = await _log_tail(conn, execution_id)
    return page(
        request,
        "execution.html",
        viewer,
        **_context(detail, viewer, await _username(state, detail.user_id)),
        log_text=text,
        log_chars=length,
        log_cut=cut,
        log_clipped=length > len(text),
    )


@router.get("/executions/{execution_id:int}/log")
async def read_log(
    request: Request,
    execution_id: ExecutionId,
    _viewer: CurrentViewer,
    attempt: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> Response:
    """The whole captured log as plain text (as the API answers it), of one attempt."""
    db = get_state(request).db
    return PlainTextResponse(await executions.read_log(db, execution_id, attempt))


@router.get("/executions/{execution_id:int}/attempts")
async def show_attempts(
    request: Request, execution_id: ExecutionId, viewer: CurrentViewer
) -> Response:
    """Every attempt of an execution: how each ended, its steps and its log."""
    tried = await executions.attempts(get_state(request).db, execution_id)
    return page(request, "attempts.html", viewer, execution_id=execution_id, attempts=tried)


@router.get("/executions/{execution_id:int}/artifacts/{artifact_id:int}")
async def read_artifact(
    request: Request, execution_id: ExecutionId, artifact_id: ArtifactId, _viewer: CurrentViewer
) -> Response:
    """A screenshot or trace, for anyone signed in (as in the API), shown inline when an image."""
    state = get_state(request)
    found = await executions.artifact_file(state.db, state.settings, execution_id, artifact_id)
    inline = "inline" if found.content_type.startswith("image/") else "attachment"
    if not isinstance(found.source, Path):
        headers = found.headers(inline)
        return StreamingResponse(found.source, media_type=found.content_type, headers=headers)
    return FileResponse(
        found.source,
        media_type=found.content_type,
        filename=found.name,
        content_disposition_type=inline,
    )


async def _mark(state: AppState, execution_id: int) -> tuple[Any, ...]:
    """A cheap summary of everything the facts and steps show, to push only on change."""
    attempt = _current_attempt(execution_id)
    of_steps = and_(ExecutionStep.execution_id == execution_id, ExecutionStep.attempt == attempt)
    # Steps are replaced as a whole when saved, so their highest id moves on every save.
    step_count = select(func.count()).where(of_steps).scalar_subquery()
    step_last = select(func.max(ExecutionStep.id)).where(of_steps).scalar_subquery()
    # A row counts when it appears, and again once stored or refused (kept in the database,
    # its bytes arrive after the row), so the page shows the image when it can be read.
    settled = func.count(case((Artifact.stored, 1))) + func.count(Artifact.error)
    artifacts = (
        select(func.count() + settled)
        .where(Artifact.execution_id == execution_id, Artifact.attempt == attempt)
        .scalar_subquery()
    )
    columns = (E.status, E.result, E.priority, E.attempt, E.started_at, E.completed_at)
    async with state.db.read() as conn:
        row = (
            await conn.execute(
                select(*columns, E.cancel_requested, step_count, step_last, artifacts).where(
                    E.id == execution_id
                )
            )
        ).one_or_none()
        if row is None:
            raise errors.NotFound(f"execution {execution_id} does not exist")
        pending = row.status == Status.PENDING
        position = await position_of(conn, state.db, execution_id) if pending else None
    return (*row, position)


class LogFollower:
    """What was added to one execution's log since the last call, as a `log` event."""

    def __init__(self, state: AppState, execution_id: int, chars: int, cut: int) -> None:
        self.state = state
        self.execution_id = execution_id
        self.chars = chars
        self.cut = cut

    async def next_event(self) -> str:
        content = ExecutionLog.content
        length = func.length(content)
        where = and_(
            ExecutionLog.execution_id == self.execution_id,
            ExecutionLog.attempt == _current_attempt(self.execution_id),
        )
        async with self.state.db.read() as conn:
            # Length, cut and the new text come from one statement, so they agree
            # even where each statement sees its own snapshot (READ COMMITTED).
            added_since = func.substr(content, self.chars + 1, LOG_SHOWN_CHARS + 1)
            row = (
                await conn.execute(select(length, ExecutionLog.cut_bytes, added_since).where(where))
            ).one_or_none()
            if row is None:
                return ""
            total, cut, added = int(row[0] or 0), int(row[1] or 0), str(row[2] or "")
            if cut == self.cut and total >= self.chars and len(added) <= LOG_SHOWN_CHARS:
                self.chars = total
                return self._event({"text": added}) if added else ""
            # The log was cut (or fell far behind): send its tail again in full.
            text, self.chars, self.cut = await _log_tail(conn, self.execution_id)
        return self._event({"reset": True, "text": text, "clipped": len(text) < self.chars})

    def _event(self, data: dict[str, Any]) -> str:
        # Its id is where the page's log now ends: a browser that reconnects
        # sends it back (Last-Event-ID), so nothing is sent twice.
        return sse.message("log", data, event_id=f"{self.chars}.{self.cut}")


def _resume_point(last_event_id: str, chars: int, cut: int) -> tuple[int, int]:
    """The log position a `log` event's id names (`chars.cut`), else the one given."""
    given, _, given_cut = last_event_id.partition(".")
    try:
        return parse_whole(given, 0, MAX_BIGINT), parse_whole(given_cut, 0, MAX_BIGINT)
    except ValueError:
        return chars, cut


def _fragments(detail: ExecutionPublic, viewer: Viewer, owner: str) -> dict[str, Any]:
    context = _context(detail, viewer, owner)
    return {
        "status": detail.status,
        "live": context["live"],
        "facts": templates.get_template("_execution_facts.html").render(context),
        "steps": templates.get_template("_execution_steps.html").render(context),
    }


@router.get("/events/executions/{execution_id:int}")
async def stream_execution(
    request: Request,
    execution_id: ExecutionId,
    viewer: CurrentViewer,
    chars: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
    cut: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
) -> StreamingResponse:
    """Facts and steps when they change and the log as it grows, until the run has ended.

    `chars` and `cut` say where the page's log ends; on a reconnect the
    browser's Last-Event-ID says it instead, as the page has moved on since.
    """
    state = get_state(request)
    chars, cut = _resume_point(request.headers.get("last-event-id", ""), chars, cut)
    async with state.db.read() as conn:
        owner_id = (await executions.load_execution(conn, execution_id))["user_id"]
    owner = await _username(state, owner_id)
    follower = LogFollower(state, execution_id, chars, cut)
    last: list[tuple[Any, ...]] = []

    async def produce() -> str:
        mark = await _mark(state, execution_id)
        parts = []
        if not last or last[0] != mark:
            last[:] = [mark]
            detail = await executions.execution_detail(state.db, state.settings, execution_id)
            parts.append(sse.message("detail", _fragments(detail, viewer, owner)))
        # Read after the status: a run seen ended has its final log saved already.
        parts.append(await follower.next_event())
        if mark[0] in FINAL_STATUSES:
            parts.append(sse.END)
        return "".join(parts)

    return sse.stream(request, produce)
