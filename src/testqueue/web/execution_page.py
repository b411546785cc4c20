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
from sqlalchemy import case, func, select

from testqueue import errors
from testqueue.api import views
from testqueue.api.deps import AppState, get_state
from testqueue.models import Artifact, Execution, ExecutionLog, ExecutionStep, Status, User
from testqueue.queue.positions import position_of
from testqueue.schemas import ExecutionPublic
from testqueue.web import events, forms
from testqueue.web.render import PageRoute, page, templates
from testqueue.web.session import CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

E = Execution
# The most log text one page load or one event carries; the rest is a link away.
LOG_SHOWN_CHARS = 100_000
FINAL = (Status.COMPLETED, Status.CANCELLED)


async def _username(state: AppState, user_id: int | None) -> str:
    if user_id is None:
        return "-"
    async with state.db.read() as conn:
        name = (
            await conn.execute(select(User.username).where(User.id == user_id))
        ).scalar_one_or_none()
    return name or "-"


def _context(detail: ExecutionPublic, viewer: Viewer, owner: str) -> dict[str, Any]:
    live = detail.status not in FINAL
    return {
        "ex": detail,
        "owner": owner,
        "shots": {a.name: a for a in detail.artifacts if a.content_type.startswith("image/")},
        "can_change": live and (viewer.is_admin or detail.user_id == viewer.id),
        "live": live,
    }


async def _log_tail(state: AppState, execution_id: int) -> tuple[str, int, int]:
    """The last `LOG_SHOWN_CHARS` of the log, its full length in characters, and its cut."""
    async with state.db.read() as conn:
        row = (
            await conn.execute(
                select(func.length(ExecutionLog.content), ExecutionLog.cut_bytes).where(
                    ExecutionLog.execution_id == execution_id
                )
            )
        ).one_or_none()
        if row is None:
            return "", 0, 0
        length, cut = int(row[0] or 0), int(row[1] or 0)
        text = await _log_from(conn, execution_id, max(0, length - LOG_SHOWN_CHARS))
    return text, length, cut


async def _log_from(conn: Any, execution_id: int, start: int) -> str:
    """The log from character `start` (0-based) on; SQL `substr` counts from 1."""
    text = (
        await conn.execute(
            select(func.substr(ExecutionLog.content, start + 1)).where(
                ExecutionLog.execution_id == execution_id
            )
        )
    ).scalar_one_or_none()
    return str(text or "")


@router.get("/executions/{execution_id:int}")
async def show_execution(
    request: Request, execution_id: forms.RowId, viewer: CurrentViewer
) -> Response:
    """One execution; its log and steps follow live while it runs."""
    state = get_state(request)
    detail = await views.execution_detail(state, execution_id)
    text, length, cut = await _log_tail(state, execution_id)
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
async def read_log(request: Request, execution_id: forms.RowId, _viewer: CurrentViewer) -> Response:
    """The whole captured log as plain text."""
    async with get_state(request).db.read() as conn:
        await views.load_execution(conn, execution_id)
        text = await _log_from(conn, execution_id, 0)
    return PlainTextResponse(text)


@router.get("/executions/{execution_id:int}/artifacts/{artifact_id:int}")
async def read_artifact(
    request: Request, execution_id: forms.RowId, artifact_id: forms.RowId, _viewer: CurrentViewer
) -> Response:
    """A screenshot or trace, for anyone signed in (as in the API), shown inline when an image."""
    state = get_state(request)
    async with state.db.read() as conn:
        row = (
            await conn.execute(
                select(Artifact.path, Artifact.name, Artifact.content_type).where(
                    Artifact.id == artifact_id, Artifact.execution_id == execution_id
                )
            )
        ).one_or_none()
    root = Path(state.settings.artifacts_dir).resolve()
    path = Path(row.path).resolve() if row else None
    if row is None or path is None or not path.is_relative_to(root):
        raise errors.NotFound(f"execution {execution_id} has no artifact {artifact_id}")
    if not path.is_file():
        raise errors.NotFound(f"artifact {artifact_id} was removed by the age-based clean-up")
    inline = "inline" if row.content_type.startswith("image/") else "attachment"
    return FileResponse(
        path, media_type=row.content_type, filename=row.name, content_disposition_type=inline
    )


async def _mark(state: AppState, execution_id: int) -> tuple[Any, ...]:
    """A cheap summary of everything the facts and steps show, to push only on change."""
    of_steps = ExecutionStep.execution_id == execution_id
    # Steps are replaced as a whole when saved, so their highest id moves on every save.
    step_count = select(func.count()).where(of_steps).scalar_subquery()
    step_last = select(func.max(ExecutionStep.id)).where(of_steps).scalar_subquery()
    artifacts = select(func.count()).where(Artifact.execution_id == execution_id).scalar_subquery()
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
        position = await position_of(conn, execution_id) if row.status == Status.PENDING else None
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
        where = ExecutionLog.execution_id == self.execution_id
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
                return events.message("log", {"text": added}) if added else ""
            # The log was cut (or fell far behind): send its tail again in full.
            start = case((length > LOG_SHOWN_CHARS, length - LOG_SHOWN_CHARS + 1), else_=1)
            row = (
                await conn.execute(
                    select(length, ExecutionLog.cut_bytes, func.substr(content, start)).where(where)
                )
            ).one()
        self.chars, self.cut = int(row[0] or 0), int(row[1] or 0)
        text = str(row[2] or "")
        return events.message(
            "log", {"reset": True, "text": text, "clipped": len(text) < self.chars}
        )


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
    execution_id: forms.RowId,
    viewer: CurrentViewer,
    chars: Annotated[int, Query(ge=0, le=forms.MAX_ID)] = 0,
    cut: Annotated[int, Query(ge=0, le=forms.MAX_ID)] = 0,
) -> StreamingResponse:
    """Facts and steps when they change and the log as it grows, until the run has ended."""
    state = get_state(request)
    owner = await _username(state, (await views.execution_detail(state, execution_id)).user_id)
    follower = LogFollower(state, execution_id, chars, cut)
    last: list[tuple[Any, ...]] = []

    async def produce() -> str:
        mark = await _mark(state, execution_id)
        parts = []
        if not last or last[0] != mark:
            last[:] = [mark]
            detail = await views.execution_detail(state, execution_id)
            parts.append(events.message("detail", _fragments(detail, viewer, owner)))
        # Read after the status: a run seen ended has its final log saved already.
        parts.append(await follower.next_event())
        if mark[0] in FINAL:
            parts.append(events.END)
        return "".join(parts)

    return events.stream(request, produce)
