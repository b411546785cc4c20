"""Trying a failed run again, and keeping every attempt's outcome.

A test case (or its batch) may ask for `retries` after some results
(`retry_on`). A run that ends with one of them, with retries left, goes back
to the front of its priority as attempt n + 1 instead of completing; its
ended attempt is kept in `execution_attempts` (its log, steps and artifacts
stay under their attempt number). A run that passes after a retry is `pass`
and `flaky`. A lost worker's attempt is kept the same way, but never uses up
a retry: MAX_ATTEMPTS counts those apart (`attempt - retried`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, literal, select

from testqueue.database import Conn
from testqueue.models import Execution, ExecutionAttempt, utcnow
from testqueue.queue import moves
from testqueue.queue.order import PENDING, RUNNING
from testqueue.queue.progress import storable
from testqueue.vocabulary import Result, Status, decode_tags

E = Execution
A = ExecutionAttempt
# Ahead of the first run of its priority by this much.
FRONT_GAP = timedelta(microseconds=1)


def wants_retry(result: Result | None, retries: int, retried: int, retry_on: str) -> bool:
    """Whether a run that ended with `result` is tried again."""
    return result is not None and retried < retries and result.value in decode_tags(retry_on)


def _attempt_row(*where: ColumnElement[bool], **given: Any) -> Any:
    """INSERT INTO execution_attempts SELECT <this attempt> FROM executions WHERE ..."""
    values = {
        A.execution_id: E.id,
        A.attempt: E.attempt,
        A.result: given.get("result", literal(None, A.result.type)),
        A.exit_code: given.get("exit_code", literal(None, A.exit_code.type)),
        A.error_message: given["error_message"],
        A.started_at: E.started_at,
        A.ended_at: given["ended_at"],
        A.worker_id: E.worker_id,
        A.total_steps: given.get("total_steps", E.total_steps),
        A.passed_steps: given.get("passed_steps", E.passed_steps),
        A.failed_steps: given.get("failed_steps", E.failed_steps),
        A.skipped_steps: given.get("skipped_steps", E.skipped_steps),
    }
    source = select(*values.values()).where(*where)
    return insert(A).from_select([column.key for column in values], source)


def _param(name: str, column: Any) -> Any:
    return bindparam(name, type_=column.type)


_KEEP_ENDED = _attempt_row(
    E.id == bindparam("r_id"),
    E.attempt == bindparam("r_attempt"),
    E.worker_id == bindparam("r_worker"),
    RUNNING,
    E.cancel_requested.is_(False),
    result=_param("r_result", A.result),
    exit_code=_param("r_exit_code", A.exit_code),
    error_message=_param("r_error", A.error_message),
    ended_at=_param("r_now", A.ended_at),
    total_steps=_param("r_total", A.total_steps),
    passed_steps=_param("r_passed", A.passed_steps),
    failed_steps=_param("r_failed", A.failed_steps),
    skipped_steps=_param("r_skipped", A.skipped_steps),
)
_REQUEUE = moves.move(
    Status.RUNNING,
    Status.PENDING,
    E.id == bindparam("r_id"),
    E.attempt == bindparam("r_attempt"),
    E.worker_id == bindparam("r_worker"),
    E.cancel_requested.is_(False),
    attempt=E.attempt + 1,
    retried=E.retried + 1,
    queued_at=_param("r_front", E.queued_at),
    started_at=None,
    worker_id=None,
    lease_expires_at=None,
    error_message=_param("r_note", E.error_message),
    exit_code=None,
    total_steps=0,
    passed_steps=0,
    failed_steps=0,
    skipped_steps=0,
)
_FIRST_OF_PRIORITY = select(func.min(E.queued_at)).where(
    PENDING, E.priority == bindparam("r_priority")
)


async def retry(conn: Conn, worker_id: str, ended: Sequence[Any]) -> set[int]:
    """Put these ended runs back in line as their next attempt; returns the ids that went.

    A run someone asked to cancel meanwhile, or one this worker no longer
    holds, is left to the ordinary finish.
    """
    now = utcnow()
    went = set()
    for finished in ended:
        params = await _params(conn, worker_id, finished, now)
        kept = await conn.execute(_KEEP_ENDED, params)
        if kept.rowcount == 0:
            continue
        if (await conn.execute(_REQUEUE, params)).rowcount:
            went.add(finished.id)
    return went


async def _params(conn: Conn, worker_id: str, finished: Any, now: datetime) -> dict[str, Any]:
    first = (
        await conn.execute(_FIRST_OF_PRIORITY, {"r_priority": finished.priority})
    ).scalar_one_or_none()
    front = finished.queued_at if first is None else min(finished.queued_at, first - FRONT_GAP)
    result = finished.result.value if finished.result else None
    total, passed, failed, skipped = finished.steps
    return {
        "r_id": finished.id,
        "r_attempt": finished.attempt,
        "r_worker": worker_id,
        "r_priority": finished.priority,
        "r_result": result,
        "r_exit_code": finished.exit_code,
        "r_error": storable(finished.error_message),
        "r_now": now,
        "r_total": total,
        "r_passed": passed,
        "r_failed": failed,
        "r_skipped": skipped,
        "r_front": front,
        "r_note": f"attempt {finished.attempt} ended {result}; tried again at the front of "
        "its priority",
    }


async def keep_lost(conn: Conn, *where: ColumnElement[bool], now: datetime) -> None:
    """Keep the attempts of runs whose worker was lost, before they are recovered."""
    await conn.execute(
        _attempt_row(
            RUNNING,
            *where,
            error_message=literal(LOST, A.error_message.type),
            ended_at=literal(now, A.ended_at.type),
        )
    )


LOST = "its worker was lost"
