"""Reading executions: history, one execution's detail, its log and its files.

Rows are joined with their test case, with wait, run and total times derived;
the API and the dashboard show exactly these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    ColumnElement,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
)

from testqueue import artifacts, errors, models
from testqueue.config import Settings
from testqueue.database import Conn, Database
from testqueue.models import (
    Artifact,
    Execution,
    ExecutionAttempt,
    ExecutionLog,
    ExecutionStep,
    TestCase,
    as_utc,
)
from testqueue.queue import artifact_store
from testqueue.queue import status as queue_status
from testqueue.schemas import ArtifactPublic, ExecutionPage, ExecutionPublic, StepPublic
from testqueue.schemas.executions import AttemptPublic
from testqueue.services.accounts import Actor
from testqueue.vocabulary import FINAL_STATUSES, HistoryStatus, Result, Status

E = Execution


def history_filters(
    status: HistoryStatus | None,
    result: Result | None,
    test_case_id: int | None,
    user_id: int | None,
    batch_id: int | None = None,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of an execution history query; None means any.

    Each filter alone has an index that lists its executions newest first
    (`(filter, id)`, migration 0012), so a page reads only the rows it shows.
    """
    where: list[ColumnElement[bool]] = []
    if status == HistoryStatus.FAILED:
        # Only a completed run has a result; the text is the partial index's own.
        where.append(_FAILED)
    elif status is not None:
        where.append(E.status == status.value)
        if status.value in FINAL_STATUSES:
            where.append(_FINISHED)
    if result is not None:
        where.append(E.result == result)
    if test_case_id is not None:
        where.append(E.test_case_id == test_case_id)
    if user_id is not None:
        where.append(E.user_id == user_id)
    if batch_id is not None:
        where.append(E.batch_id == batch_id)
    return where


# Untyped: typed Boolean, SQLite would be sent `(...) = 1`, which no index matches.
_FAILED: ColumnElement[bool] = literal_column(
    models.FAILED.replace("result", "executions.result", 1)
)
_FINISHED: ColumnElement[bool] = literal_column(
    models.FINISHED.replace("status", "executions.status", 1)
)


def _selection() -> Any:
    return select(E.__table__, TestCase.title.label("test_case_title")).outerjoin(
        TestCase, TestCase.id == E.test_case_id
    )


# Built once: building a statement costs more than SQLite takes to run it.
# The detail also carries the log's tail (`console_log`), read in the same statement.
CONSOLE_LOG_CHARS = 20_000


def _console_log() -> Any:
    length = func.length(ExecutionLog.content)
    start = case((length > CONSOLE_LOG_CHARS, length - CONSOLE_LOG_CHARS + 1), else_=1)
    return (
        select(func.substr(ExecutionLog.content, start))
        .where(ExecutionLog.execution_id == E.id, ExecutionLog.attempt == E.attempt)
        .scalar_subquery()
        .label("console_log")
    )


_ONE = _selection().add_columns(_console_log()).where(E.id == bindparam("execution_id"))
_STEPS = (
    select(ExecutionStep.__table__)
    .where(
        ExecutionStep.execution_id == bindparam("execution_id"),
        ExecutionStep.attempt == bindparam("attempt"),
    )
    .order_by(ExecutionStep.number)
)
_ARTIFACTS = (
    select(Artifact.__table__)
    .where(
        Artifact.execution_id == bindparam("execution_id"),
        Artifact.attempt == bindparam("attempt"),
    )
    .order_by(Artifact.id)
)
_ENDED_ATTEMPTS = (
    select(ExecutionAttempt.__table__)
    .where(ExecutionAttempt.execution_id == bindparam("execution_id"))
    .order_by(ExecutionAttempt.attempt)
)


async def load_execution(conn: Conn, execution_id: int) -> Any:
    row = (await conn.execute(_ONE, {"execution_id": execution_id})).mappings().one_or_none()
    if row is None:
        raise errors.NotFound(f"execution {execution_id} does not exist")
    return row


async def execution_rows(
    conn: Conn,
    where: list[ColumnElement[bool]],
    limit: int | None,
    offset: int,
    *,
    oldest_first: bool = False,
) -> list[ExecutionPublic]:
    order = E.id.asc() if oldest_first else E.id.desc()
    rows = await conn.execute(
        _selection().where(*where).order_by(order).limit(limit).offset(offset)
    )
    return [public(row) for row in rows.mappings()]


def public(row: Any) -> ExecutionPublic:
    """The API view of one row, with wait, run and total durations in seconds."""
    data = dict(row)
    queued = as_utc(data["queued_at"])
    started, completed = (
        as_utc(data[k]) if data[k] else None for k in ("started_at", "completed_at")
    )
    if started is not None:
        data["wait_seconds"] = round((started - queued).total_seconds(), 6)
        if completed is not None:
            data["run_seconds"] = round((completed - started).total_seconds(), 6)
    if completed is not None:
        data["duration_seconds"] = round((completed - queued).total_seconds(), 6)
    return ExecutionPublic.model_validate(data)


# Matches counted at most: past this many, a page says "more than" instead of a number,
# as counting a million rows costs what reading them does.
COUNT_WINDOW = 10_000


async def list_executions(
    db: Database,
    where: list[ColumnElement[bool]],
    limit: int,
    offset: int = 0,
    *,
    before_id: int | None = None,
) -> ExecutionPage:
    """History, newest first: one page, whether older ones follow, and the matches counted.

    `before_id` (executions older than it) pages by cursor: each page reads
    its own rows from the filter's index, at any depth. `offset` still works,
    but skips rows one by one, so deep offsets are slow. `total` counts the
    filters' matches exactly up to `COUNT_WINDOW`; past that it is the window
    and `total_exact` is false.
    """
    paged = where if before_id is None else [*where, E.id < before_id]
    async with db.read() as conn:
        items = await execution_rows(conn, paged, limit + 1, offset)
        more = len(items) > limit
        items = items[:limit]
        if offset == 0 and before_id is None and not more:
            total = len(items)  # every match is on this page
        else:
            total = (await conn.execute(_bounded_count(where))).scalar_one()
    return ExecutionPage(
        items=items,
        total=min(total, COUNT_WINDOW),
        total_exact=total <= COUNT_WINDOW,
        limit=limit,
        offset=offset,
        has_more=more,
        next_before_id=items[-1].id if more else None,
    )


async def newer_executions(
    db: Database, where: list[ColumnElement[bool]], limit: int, after_id: int
) -> tuple[list[ExecutionPublic], bool]:
    """The page of matches just newer than `after_id`, newest first, and whether still
    newer ones follow: a pager's way back up, as fast as its way down."""
    async with db.read() as conn:
        rows = await execution_rows(
            conn, [*where, E.id > after_id], limit + 1, 0, oldest_first=True
        )
    return rows[:limit][::-1], len(rows) > limit


def _bounded_count(where: list[ColumnElement[bool]]) -> Any:
    """How many match, counting no further than one past the window."""
    matches = select(E.id).where(*where).limit(COUNT_WINDOW + 1).subquery()
    return select(func.count()).select_from(matches)


async def execution_detail(db: Database, settings: Settings, execution_id: int) -> ExecutionPublic:
    """One execution with steps, artifacts, and its live position and wait reason."""
    async with db.read() as conn:
        row = await load_execution(conn, execution_id)
        detail = public(row)
        detail.steps = await _steps(conn, execution_id, row["attempt"])
        detail.artifacts = await _artifacts(conn, execution_id, row["attempt"])
        if row["status"] == Status.RUNNING and row["started_at"] is not None:
            detail.estimated_finish = await queue_status.running_finish(
                conn, row["test_case_id"], row["started_at"], settings.execution_timeout
            )
    if row["status"] == Status.PENDING:
        for name, value in (await queue_status.pending_detail(db, execution_id)).items():
            setattr(detail, name, value)
    return detail


async def read_log(db: Database, execution_id: int, attempt: int | None = None) -> str:
    """The captured output so far (stdout and stderr together; saved every heartbeat), of
    the current attempt or of the one asked for."""
    async with db.read() as conn:
        row = await load_execution(conn, execution_id)
        if attempt is not None and not 1 <= attempt <= row["attempt"]:
            raise errors.NotFound(
                f"execution {execution_id} has attempts 1 to {row['attempt']}, not {attempt}"
            )
        content = (
            await conn.execute(
                select(ExecutionLog.content).where(
                    ExecutionLog.execution_id == execution_id,
                    ExecutionLog.attempt == (attempt or row["attempt"]),
                )
            )
        ).scalar_one_or_none()
    return content or ""


async def attempts(db: Database, execution_id: int) -> list[AttemptPublic]:
    """Every attempt: the ended ones (retried, or lost with their worker), then the current."""
    async with db.read() as conn:
        row = await load_execution(conn, execution_id)
        ended = (await conn.execute(_ENDED_ATTEMPTS, {"execution_id": execution_id})).mappings()
        listed = [
            {**dict(a), "status": "lost" if a["result"] is None else "retried"} for a in ended
        ]
        current = {k: row[k] for k in _CURRENT_FIELDS}
        listed.append({**current, "attempt": row["attempt"], "ended_at": row["completed_at"]})
        out = []
        for item in listed:
            number = item["attempt"]
            out.append(
                AttemptPublic.model_validate(
                    {
                        **item,
                        "log_url": f"/api/v1/executions/{execution_id}/log?attempt={number}",
                        "steps": await _steps(conn, execution_id, number),
                        "artifacts": await _artifacts(conn, execution_id, number),
                    }
                )
            )
    return out


_CURRENT_FIELDS = (
    "status",
    "result",
    "exit_code",
    "error_message",
    "started_at",
    "worker_id",
    "total_steps",
    "passed_steps",
    "failed_steps",
    "skipped_steps",
)


async def delete_execution(
    db: Database, settings: Settings, execution_id: int, actor: Actor
) -> None:
    """Delete a finished execution with its log, steps and artifacts."""
    async with db.write() as conn:
        row = await load_execution(conn, execution_id)
        if actor.owner_filter() is not None and row["user_id"] != actor.id:
            raise errors.Forbidden(f"execution {execution_id} belongs to another user")
        if row["status"] in (Status.PENDING, Status.RUNNING):
            raise errors.InvalidTransition(
                f"execution {execution_id} is {row['status']}: cancel it before deleting it"
            )
        await conn.execute(delete(E).where(E.id == execution_id))
    await asyncio.to_thread(artifacts.remove_execution_artifacts, settings, execution_id)


@dataclass(frozen=True)
class ArtifactDownload:
    """An artifact ready to send: a file on this host, or its chunks in the database."""

    name: str
    content_type: str
    size_bytes: int
    source: Path | AsyncIterator[bytes]  # the file, or its chunks read one by one

    def headers(self, disposition: str) -> dict[str, str]:
        """Content-Disposition (`inline` or `attachment`) and Content-Length, as a file has."""
        quoted = quote(self.name)
        named = f'filename="{self.name}"' if quoted == self.name else f"filename*=utf-8''{quoted}"
        return {
            "content-disposition": f"{disposition}; {named}",
            "content-length": str(self.size_bytes),
        }


async def artifact_file(
    db: Database, settings: Settings, execution_id: int, artifact_id: int
) -> ArtifactDownload:
    """An artifact to send. NotFound when there is none, when it was not kept (the
    message says why), while it is being stored, when its path lies outside
    ARTIFACTS_DIR, or when the age-based clean-up removed the file."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                _ARTIFACT, {"execution_id": execution_id, "artifact_id": artifact_id}
            )
        ).one_or_none()
    if row is None:
        raise errors.NotFound(f"execution {execution_id} has no artifact {artifact_id}")
    if row.error is not None:
        raise errors.NotFound(f"artifact {artifact_id} was not kept: {row.error}")
    if row.location == artifact_store.DATABASE:
        return _stored_chunks(db, artifact_id, row)
    root = Path(settings.artifacts_dir).resolve()
    path = Path(row.path).resolve()
    if not path.is_relative_to(root):
        raise errors.NotFound(f"execution {execution_id} has no artifact {artifact_id}")
    if not path.is_file():
        raise errors.NotFound(f"artifact {artifact_id} was removed by the age-based clean-up")
    return ArtifactDownload(row.name, row.content_type, row.size_bytes, path)


def _stored_chunks(db: Database, artifact_id: int, row: Any) -> ArtifactDownload:
    """A database-kept artifact, once every chunk of it is there."""
    if not row.stored:
        if row.status in FINAL_STATUSES:
            raise errors.NotFound(f"artifact {artifact_id} was not kept: storing it did not finish")
        raise errors.NotFound(
            f"artifact {artifact_id} is still being stored; read it again in a moment"
        )
    chunks = artifact_store.read_chunks(db, artifact_id, row.size_bytes)
    return ArtifactDownload(row.name, row.content_type, row.size_bytes, chunks)


_ARTIFACT = (
    select(
        Artifact.path,
        Artifact.name,
        Artifact.content_type,
        Artifact.size_bytes,
        Artifact.location,
        Artifact.stored,
        Artifact.error,
        E.status,
    )
    .join(E, E.id == Artifact.execution_id)
    .where(
        Artifact.id == bindparam("artifact_id"),
        Artifact.execution_id == bindparam("execution_id"),
    )
)


async def _steps(conn: Conn, execution_id: int, attempt: int) -> list[StepPublic]:
    rows = await conn.execute(_STEPS, {"execution_id": execution_id, "attempt": attempt})
    return [StepPublic.model_validate(dict(row)) for row in rows.mappings()]


async def _artifacts(conn: Conn, execution_id: int, attempt: int) -> list[ArtifactPublic]:
    """An attempt's artifacts, those not kept (with why) and those still being stored too."""
    rows = await conn.execute(_ARTIFACTS, {"execution_id": execution_id, "attempt": attempt})
    return [
        ArtifactPublic.model_validate(
            {
                **dict(row),
                "stored": row["stored"] and row["error"] is None,
                "url": f"/api/v1/executions/{execution_id}/artifacts/{row['id']}",
            }
        )
        for row in rows.mappings()
    ]
