"""Saving what runs report while they go on: logs, steps, artifacts.

A handful of statements for any number of runs: one dispatcher pass or one
heartbeat may save many.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from sqlalchemy import bindparam, delete, insert

from testqueue.database import Conn
from testqueue.models import Artifact, ExecutionLog, ExecutionStep, utcnow
from testqueue.queue import dialect
from testqueue.vocabulary import ArtifactRecord, Progress, StepRecord

# INSERT ... ON CONFLICT (execution_id) DO UPDATE: one statement, first save or not.
_LOG_UPSERTS = {
    d.name: d.upsert(
        ExecutionLog, [ExecutionLog.execution_id, ExecutionLog.attempt], ["content", "cut_bytes"]
    )
    for d in (dialect.SQLITE, dialect.POSTGRES)
}


_DELETE_STEPS = delete(ExecutionStep).where(
    ExecutionStep.execution_id == bindparam("e"), ExecutionStep.attempt == bindparam("a")
)


async def save_progress(conn: Conn, progress: Sequence[Progress]) -> None:
    """Store logs, steps and artifacts so they can be read while the run goes on."""
    logs = [p for p in progress if p.log is not None]
    if logs:
        rows = [
            {
                "execution_id": p.execution_id,
                "attempt": p.attempt,
                "content": storable(p.log),
                "cut_bytes": p.cut_bytes,
            }
            for p in logs
        ]
        await conn.execute(_LOG_UPSERTS[dialect.of_connection(conn).name], rows)
    steps = [p for p in progress if p.steps is not None]
    if steps:
        await conn.execute(_DELETE_STEPS, [{"e": p.execution_id, "a": p.attempt} for p in steps])
        rows = [_step_row(p, step) for p in steps for step in p.steps or ()]
        if rows:
            await conn.execute(insert(ExecutionStep), rows)
    artifacts = [_artifact_row(p, a) for p in progress for a in p.artifacts]
    if artifacts:
        await conn.execute(insert(Artifact), artifacts)


@overload
def storable(value: str) -> str: ...
@overload
def storable(value: None) -> None: ...
def storable(value: str | None) -> str | None:
    """What a run wrote, storable: PostgreSQL text cannot hold NUL, and a value
    with one would fail every save of the run (leases included)."""
    return None if value is None else value.replace("\0", "\N{REPLACEMENT CHARACTER}")


def _step_row(progress: Progress, step: StepRecord) -> dict[str, Any]:
    return {
        "execution_id": progress.execution_id,
        "attempt": progress.attempt,
        "number": step.number,
        "action": step.action,
        "description": storable(step.description),
        "result": step.result,
        "duration_ms": step.duration_ms,
        "error_message": storable(step.error_message),
        "screenshot": step.screenshot,
    }


def _artifact_row(progress: Progress, artifact: ArtifactRecord) -> dict[str, Any]:
    size = artifact.path.stat().st_size if artifact.path.exists() else 0
    return {
        "execution_id": progress.execution_id,
        "attempt": progress.attempt,
        "kind": artifact.kind,
        "name": artifact.name,
        "path": str(artifact.path),
        "content_type": artifact.content_type,
        "size_bytes": size,
        "created_at": utcnow(),
    }
