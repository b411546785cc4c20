"""Test cases: what to run, who may change it, and the checks a test case must pass.

A `command` test case runs code on the worker host, so only admins create or
edit one. Members edit and delete their own test cases; admins any. Deleting
archives: history keeps the test case's title and its runs, lists and run
requests no longer see it. Every write here sets `updated_at`: workers keep
test case rows they read until it changes (`queue.CaseCache`), and this
module is the only writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, false, func, insert, or_, select, update

from testqueue import errors, queue
from testqueue.database import Conn, Database
from testqueue.models import Execution, TestCase, utcnow
from testqueue.runners import Registry
from testqueue.runners import steps as browser_steps
from testqueue.schemas import TestCaseCreate, TestCasePage, TestCasePublic, TestCaseUpdate
from testqueue.schemas.common import problem_text
from testqueue.services.accounts import Actor
from testqueue.vocabulary import (
    CANCELLED_CASE_DELETED,
    RunnerKind,
    Status,
    TagMode,
    decode_tags,
    encode_tags,
)

T = TestCase


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


def may_edit(case: TestCasePublic, actor: Actor) -> bool:
    return edit_refusal(case.id, case.runner, case.created_by, actor) is None


def runner_kinds(registry: Registry) -> set[str]:
    """The runner kinds a test case may name: the built-in ones and any registered."""
    return {*registry.kinds(), *(kind.value for kind in RunnerKind)}


def tagged(tags: Sequence[str], mode: TagMode = TagMode.ANY) -> ColumnElement[bool]:
    """The test cases with any (or all) of `tags`, case-insensitively."""
    wanted = decode_tags(encode_tags(tags))
    matches = [T.tags.contains(f",{tag},", autoescape=True) for tag in wanted]
    if not matches:
        return false()
    return or_(*matches) if mode == TagMode.ANY else and_(*matches)


async def list_cases(
    db: Database,
    limit: int,
    offset: int,
    search: str | None = None,
    runner: str | None = None,
    tags: Sequence[str] = (),
) -> TestCasePage:
    """Test cases, newest first, with an optional title search and runner or tag filter."""
    if "\0" in (search or "") + (runner or "") + "".join(tags):
        # PostgreSQL refuses NUL in a query parameter; no title, runner or tag holds one.
        raise errors.InvalidInput("search, runner and tag may not contain a NUL character")
    where: list[ColumnElement[bool]] = [T.archived_at.is_(None)]
    if tags:
        where.append(tagged(tags))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(T.title.ilike(f"%{escaped}%", escape="\\"))
    if runner:
        where.append(T.runner == runner)
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(T).where(*where))).scalar_one()
        rows = await conn.execute(
            select(T.__table__).where(*where).order_by(T.id.desc()).limit(limit).offset(offset)
        )
        items = [_public(row) for row in rows.mappings()]
    return TestCasePage(items=items, total=total, limit=limit, offset=offset)


async def read_case(db: Database, test_case_id: int) -> TestCasePublic:
    async with db.read() as conn:
        return _public(await _load(conn, test_case_id))


async def choices(db: Database, limit: int) -> list[tuple[int, str]]:
    """(id, title) of test cases by title, for pickers."""
    async with db.read() as conn:
        live = select(T.id, T.title).where(T.archived_at.is_(None))
        rows = await conn.execute(live.order_by(T.title, T.id).limit(limit))
        return [(row.id, row.title) for row in rows]


async def pending_runs(db: Database, test_case_id: int) -> int:
    """How many runs of this test case wait in line."""
    async with db.read() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(
                        Execution.test_case_id == test_case_id,
                        Execution.status == Status.PENDING,
                    )
                )
            ).scalar_one()
        )


async def create_case(
    db: Database, registry: Registry, body: TestCaseCreate, actor: Actor
) -> TestCasePublic:
    """A new test case; `command` ones are for admins only."""
    values = _checked(registry, body, actor)
    now = utcnow()
    async with db.write() as conn:
        statement = (
            insert(T)
            .values(**values, created_by=actor.id, created_at=now, updated_at=now)
            .returning(*T.__table__.c)
        )
        row = (await conn.execute(statement)).mappings().one()
    return _public(row)


async def update_case(
    db: Database, registry: Registry, test_case_id: int, changes: TestCaseUpdate, actor: Actor
) -> TestCasePublic:
    """Change the fields given; the others keep their values."""
    async with db.write() as conn:
        current = await _load(conn, test_case_id)
        _may_edit(current, actor)
        _not_archived(current)
        merged = {**_public(current).model_dump(), **changes.model_dump(exclude_unset=True)}
        try:
            fields = TestCaseCreate.model_validate(
                {k: v for k, v in merged.items() if k in TestCaseCreate.model_fields}
            )
        except ValidationError as exc:
            raise errors.InvalidInput(_first_problem(exc)) from exc
        values = _checked(registry, fields, actor)
        statement = (
            update(T)
            .where(T.id == test_case_id)
            .values(**values, updated_at=utcnow())
            .returning(*T.__table__.c)
        )
        row = (await conn.execute(statement)).mappings().one()
    return _public(row)


async def delete_case(db: Database, test_case_id: int, actor: Actor) -> int:
    """Archive a test case and cancel its pending runs, in one transaction.

    Its history stays whole (its runs keep their `test_case_id` and title);
    running ones go on with the spec they were claimed with. Returns how many
    pending runs were cancelled.
    """
    async with db.write() as conn:
        current = await _load(conn, test_case_id)
        _may_edit(current, actor)
        _not_archived(current)
        cancelled = await queue.cancel_pending_of(conn, db, test_case_id, CANCELLED_CASE_DELETED)
        now = utcnow()
        await conn.execute(
            update(T).where(T.id == test_case_id).values(archived_at=now, updated_at=now)
        )
    if cancelled:
        db.wakeups.changed()
    return cancelled


async def _load(conn: Conn, test_case_id: int) -> Any:
    row = (
        (await conn.execute(select(T.__table__).where(T.id == test_case_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise errors.NotFound(f"test case {test_case_id} does not exist")
    return row


def _not_archived(row: Any) -> None:
    if row["archived_at"] is not None:
        raise errors.InvalidTransition(f"test case {row['id']} was deleted; it can only be read")


def _may_edit(row: Any, actor: Actor) -> None:
    if refusal := edit_refusal(row["id"], row["runner"], row["created_by"], actor):
        raise errors.Forbidden(refusal)


def _checked(registry: Registry, body: TestCaseCreate, actor: Actor) -> dict[str, Any]:
    """The columns to store, after the checks that need more than the body."""
    known = runner_kinds(registry)
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
        try:
            values["steps"] = browser_steps.validate_steps(body.steps)
        except ValueError as exc:
            raise errors.InvalidInput(str(exc)) from exc
    values["required_tags"] = encode_tags(body.required_tags)
    values["tags"] = encode_tags(body.tags)
    values["retry_on"] = encode_tags(body.retry_on)
    if body.runner != RunnerKind.COMMAND:
        values["command"] = None
    return values


def _first_problem(exc: ValidationError) -> str:
    return problem_text(exc.errors()[0])


def _public(row: Any) -> TestCasePublic:
    data = dict(row)
    for name in ("required_tags", "tags", "retry_on"):
        data[name] = decode_tags(data[name])
    return TestCasePublic.model_validate(data)
