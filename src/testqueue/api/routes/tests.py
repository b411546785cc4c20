"""Test cases: what to run.

A `command` test case runs code on the worker host, so only admins create or
edit one. Members edit and delete their own test cases; admins any.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, insert, select, update

from testqueue import errors, queue
from testqueue.api.deps import Actor, AppState, CurrentActor, Offset, State, TestCaseId
from testqueue.database import Conn
from testqueue.models import RunnerKind, TestCase, utcnow
from testqueue.queue.positions import decode_tags, encode_tags
from testqueue.schemas import (
    MAX_PAGE_SIZE,
    TestCaseCreate,
    TestCasePage,
    TestCasePublic,
    TestCaseUpdate,
)

router = APIRouter(prefix="/tests", tags=["test cases"])

T = TestCase


@router.get("")
async def list_test_cases(
    state: State,
    _actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
    search: Annotated[str | None, Query(max_length=200, description="in the title")] = None,
    runner: Annotated[str | None, Query(max_length=16)] = None,
) -> TestCasePage:
    """Test cases, newest first, with an optional title search."""
    if "\0" in (search or "") + (runner or ""):
        # PostgreSQL refuses NUL in a query parameter; no title or runner holds one.
        raise errors.InvalidInput("search and runner may not contain a NUL character")
    where: list[ColumnElement[bool]] = []
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(T.title.ilike(f"%{escaped}%", escape="\\"))
    if runner:
        where.append(T.runner == runner)
    async with state.db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(T).where(*where))).scalar_one()
        rows = await conn.execute(
            select(T.__table__).where(*where).order_by(T.id.desc()).limit(limit).offset(offset)
        )
        items = [_public(row) for row in rows.mappings()]
    return TestCasePage(items=items, total=total, limit=limit, offset=offset)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_test_case(
    state: State, body: TestCaseCreate, actor: CurrentActor
) -> TestCasePublic:
    """Create a test case; `command` ones are for admins only."""
    values = _checked(state, body, actor)
    now = utcnow()
    async with state.db.write() as conn:
        row = (
            (
                await conn.execute(
                    insert(T)
                    .values(**values, created_by=actor.id, created_at=now, updated_at=now)
                    .returning(*T.__table__.c)
                )
            )
            .mappings()
            .one()
        )
    return _public(row)


@router.get("/{test_case_id}")
async def read_test_case(
    state: State, test_case_id: TestCaseId, _actor: CurrentActor
) -> TestCasePublic:
    """One test case."""
    async with state.db.read() as conn:
        return _public(await _load(conn, test_case_id))


@router.put("/{test_case_id}")
async def update_test_case(
    state: State, test_case_id: TestCaseId, body: TestCaseUpdate, actor: CurrentActor
) -> TestCasePublic:
    """Change the fields given; the others keep their values."""
    async with state.db.write() as conn:
        current = await _load(conn, test_case_id)
        _may_edit(current, actor)
        merged = {**_public(current).model_dump(), **body.model_dump(exclude_unset=True)}
        try:
            fields = TestCaseCreate.model_validate(
                {k: v for k, v in merged.items() if k in TestCaseCreate.model_fields}
            )
        except ValidationError as exc:
            raise errors.InvalidInput(_first_problem(exc)) from exc
        values = _checked(state, fields, actor)
        row = (
            (
                await conn.execute(
                    update(T)
                    .where(T.id == test_case_id)
                    .values(**values, updated_at=utcnow())
                    .returning(*T.__table__.c)
                )
            )
            .mappings()
            .one()
        )
    return _public(row)


@router.delete("/{test_case_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_test_case(state: State, test_case_id: TestCaseId, actor: CurrentActor) -> Response:
    """Delete a test case; its pending runs are cancelled, its history is kept."""
    async with state.db.read() as conn:
        _may_edit(await _load(conn, test_case_id), actor)
    await queue.delete_test_case(state.db, test_case_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _load(conn: Conn, test_case_id: int) -> Any:
    row = (
        (await conn.execute(select(T.__table__).where(T.id == test_case_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise errors.NotFound(f"test case {test_case_id} does not exist")
    return row


def edit_refusal(case_id: int, runner: str, created_by: int | None, actor: Actor) -> str | None:
    """Why `actor` may not change this test case, or None: admins change anything,
    members their own, never a command test."""
    if actor.is_admin:
        return None
    if runner == RunnerKind.COMMAND:
        return "only an admin may change a command test case"
    if created_by != actor.id:
        return f"test case {case_id} belongs to another user"
    return None


def _may_edit(row: Any, actor: Actor) -> None:
    if refusal := edit_refusal(row["id"], row["runner"], row["created_by"], actor):
        raise errors.Forbidden(refusal)


def runner_kinds(state: AppState) -> set[str]:
    """The runner kinds a test case may name: the built-in ones and any registered."""
    return {*state.registry.kinds(), *(kind.value for kind in RunnerKind)}


def _checked(state: State, body: TestCaseCreate, actor: Actor) -> dict[str, Any]:
    """The columns to store, after the checks that need more than the body."""
    known = runner_kinds(state)
    if body.runner not in known:
        raise errors.InvalidInput(
            f"runner {body.runner!r} is unknown: use one of {', '.join(sorted(known))}"
        )
    if body.runner == RunnerKind.COMMAND and not actor.is_admin:
        raise errors.Forbidden(
            "only an admin may create or edit a command test case: it runs code on the worker host"
        )
    values = body.model_dump()
    if body.runner == RunnerKind.BROWSER:
        values["steps"] = _browser_steps(body.steps)
    values["required_tags"] = encode_tags(body.required_tags)
    if body.runner != RunnerKind.COMMAND:
        values["command"] = None
    return values


def _browser_steps(steps: list[Any]) -> list[Any]:
    from testqueue.runners import steps as browser_steps

    try:
        return browser_steps.validate_steps(steps)
    except ValueError as exc:
        raise errors.InvalidInput(str(exc)) from exc


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _public(row: Any) -> TestCasePublic:
    data = dict(row)
    data["required_tags"] = decode_tags(data["required_tags"])
    return TestCasePublic.model_validate(data)
