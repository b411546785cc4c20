"""Suites: named, saved selections of test cases (ids and/or tags), owned by their maker.

Members edit and delete their own suites, admins any. What a suite would run
is worked out when asked (`selection`): its ids in their order, then the
test cases with its tags by id that are not among them, none archived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import Suite, TestCase, utcnow
from testqueue.schemas.batches import SuiteCreate, SuitePage, SuitePublic, SuiteUpdate
from testqueue.schemas.common import problem_text
from testqueue.services.accounts import Actor
from testqueue.services.test_cases import tagged
from testqueue.vocabulary import TagMode, decode_tags, encode_tags

S = Suite
T = TestCase


async def list_suites(db: Database, limit: int, offset: int) -> SuitePage:
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(S))).scalar_one()
        rows = await conn.execute(
            select(S.__table__).order_by(S.name, S.id).limit(limit).offset(offset)
        )
        items = [_public(row) for row in rows.mappings()]
    return SuitePage(items=items, total=total, limit=limit, offset=offset)


async def read_suite(db: Database, suite_id: int) -> SuitePublic:
    async with db.read() as conn:
        return await read_suite_in(conn, suite_id)


async def read_suite_in(conn: Conn, suite_id: int) -> SuitePublic:
    """A suite, read in a transaction the caller holds."""
    return _public(await _load(conn, suite_id))


async def find_suite(db: Database, name: str) -> SuitePublic:
    """A suite by its name (the CLI's `--suite smoke`)."""
    async with db.read() as conn:
        row = (
            (await conn.execute(select(S.__table__).where(S.name == name))).mappings().one_or_none()
        )
    if row is None:
        raise errors.NotFound(f"there is no suite named {name!r}")
    return _public(row)


async def create_suite(db: Database, body: SuiteCreate, actor: Actor) -> SuitePublic:
    now = utcnow()
    try:
        async with db.write() as conn:
            row = (
                (
                    await conn.execute(
                        insert(S)
                        .values(
                            **_columns(body), created_by=actor.id, created_at=now, updated_at=now
                        )
                        .returning(*S.__table__.c)
                    )
                )
                .mappings()
                .one()
            )
    except IntegrityError as exc:
        raise errors.InvalidTransition(f"a suite named {body.name!r} exists already") from exc
    return _public(row)


async def update_suite(
    db: Database, suite_id: int, changes: SuiteUpdate, actor: Actor
) -> SuitePublic:
    try:
        async with db.write() as conn:
            current = await _load(conn, suite_id)
            _may_edit(current, actor)
            merged = {**_public(current).model_dump(), **changes.model_dump(exclude_unset=True)}
            try:
                body = SuiteCreate.model_validate(
                    {k: v for k, v in merged.items() if k in SuiteCreate.model_fields}
                )
            except ValidationError as exc:
                raise errors.InvalidInput(problem_text(exc.errors()[0])) from exc
            row = (
                (
                    await conn.execute(
                        update(S)
                        .where(S.id == suite_id)
                        .values(**_columns(body), updated_at=utcnow())
                        .returning(*S.__table__.c)
                    )
                )
                .mappings()
                .one()
            )
    except IntegrityError as exc:
        raise errors.InvalidTransition("another suite has that name") from exc
    return _public(row)


async def delete_suite(db: Database, suite_id: int, actor: Actor) -> None:
    """Delete a suite; its batches keep their runs and verdicts."""
    async with db.write() as conn:
        _may_edit(await _load(conn, suite_id), actor)
        await conn.execute(delete(S).where(S.id == suite_id))


def may_edit(suite: SuitePublic, actor: Actor) -> bool:
    return actor.is_admin or suite.created_by == actor.id


async def selection(
    db: Database, ids: Sequence[int], tags: Sequence[str], mode: TagMode
) -> list[tuple[int, str]]:
    """(id, title) of what a selection runs now, in a stable order, each once."""
    async with db.read() as conn:
        return await selection_in(conn, ids, tags, mode)


async def selection_in(
    conn: Conn, ids: Sequence[int], tags: Sequence[str], mode: TagMode
) -> list[tuple[int, str]]:
    live = T.archived_at.is_(None)
    titles: dict[int, str] = {}
    if ids:
        rows = await conn.execute(select(T.id, T.title).where(T.id.in_(set(ids)), live))
        titles = {row.id: row.title for row in rows}
        missing = sorted(set(ids) - titles.keys())
        if missing:
            raise errors.NotFound(
                f"test case {', '.join(map(str, missing))} does not exist or was deleted"
            )
    chosen = [(i, titles[i]) for i in ids]  # as given: an id named twice runs twice
    if tags:
        rows = await conn.execute(
            select(T.id, T.title).where(tagged(tags, mode), live).order_by(T.id)
        )
        seen = {i for i, _ in chosen}
        chosen += [(row.id, row.title) for row in rows if row.id not in seen]
    return chosen


async def _load(conn: Conn, suite_id: int) -> Any:
    row = (await conn.execute(select(S.__table__).where(S.id == suite_id))).mappings().one_or_none()
    if row is None:
        raise errors.NotFound(f"suite {suite_id} does not exist")
    return row


def _may_edit(row: Any, actor: Actor) -> None:
    if not (actor.is_admin or row["created_by"] == actor.id):
        raise errors.Forbidden(f"suite {row['id']} belongs to another user")


def _columns(body: SuiteCreate) -> dict[str, Any]:
    return {
        "name": body.name,
        "description": body.description,
        "test_case_ids": list(body.test_case_ids),
        "tags": encode_tags(body.tags),
        "tag_mode": body.tag_mode.value,
    }


def _public(row: Any) -> SuitePublic:
    data = dict(row)
    data["tags"] = decode_tags(data["tags"])
    return SuitePublic.model_validate(data)
