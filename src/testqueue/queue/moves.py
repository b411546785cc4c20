"""Every write to an execution's row, built from `vocabulary.TRANSITIONS`.

`move` changes the status of the rows that are in `source` (one row or a set
of them) and refuses, when the statement is built, a move the table does not
allow; `move_either` does the same when the target depends on the row (a
finished run that someone asked to cancel ends `cancelled`); `keep` changes
other fields of rows that stay where they are. Each statement is guarded by
`status = :source`, so a row that moved meanwhile is left alone and the
caller learns it from the row count. Nothing else in testqueue writes
`UPDATE executions`; `tests/unit/test_layers.py` checks that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Update, case, literal, literal_column, update

from testqueue import errors
from testqueue.database import Conn
from testqueue.models import Execution
from testqueue.vocabulary import TRANSITIONS, Status, may_move

E = Execution


def in_status(status: Status, of: Any = E) -> ColumnElement[bool]:
    """`status = '<status>'` as a literal: SQLite uses a partial index only when it
    can see that the query's WHERE implies the index's. `of` may be an alias."""
    return of.status == literal_column(f"'{status.value}'")  # type: ignore[no-any-return]


def _allowed(source: Status, target: Status) -> None:
    if not may_move(source, target):
        allowed = ", ".join(sorted(TRANSITIONS[source])) or "nothing (it is final)"
        raise errors.InvalidTransition(
            f"an execution cannot move from {source} to {target}; from {source} it may "
            f"move to {allowed}"
        )


def _no_status(values: dict[str, Any]) -> None:
    if "status" in values:
        raise TypeError("the status is the move's target, not one of its values")


def move(source: Status, target: Status, *where: ColumnElement[bool], **values: Any) -> Update:
    """UPDATE the executions in `source` (and `where`) to `target`, setting `values`."""
    _allowed(source, target)
    _no_status(values)
    return update(E).where(in_status(source), *where).values(status=target.value, **values)


def move_either(
    source: Status,
    choices: Sequence[tuple[ColumnElement[bool], Status]],
    otherwise: Status,
    *where: ColumnElement[bool],
    **values: Any,
) -> Update:
    """Like `move`, where each row goes to the first target whose condition it meets."""
    for _condition, target in choices:
        _allowed(source, target)
    _allowed(source, otherwise)
    _no_status(values)
    status = case(
        *((condition, literal(target.value)) for condition, target in choices),
        else_=literal(otherwise.value),
    )
    return update(E).where(in_status(source), *where).values(status=status, **values)


def keep(status: Status, *where: ColumnElement[bool], **values: Any) -> Update:
    """UPDATE fields other than the status of the executions in `status` (and `where`)."""
    _no_status(values)
    return update(E).where(in_status(status), *where).values(**values)


async def move_one(
    conn: Conn, execution_id: int, source: Status, target: Status, **values: Any
) -> None:
    """Move one execution; `errors.InvalidTransition` when it is no longer in `source`."""
    statement = (
        move(source, target, E.id == execution_id, **values)
        if target != source
        else keep(source, E.id == execution_id, **values)
    )
    result = await conn.execute(statement)
    if result.rowcount == 0:
        raise errors.InvalidTransition(
            f"execution {execution_id} is no longer {source}; read it again"
        )
