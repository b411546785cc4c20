"""Webhooks: who may subscribe to what, and the deliveries they can see and send again.

An admin's subscription hears every run and may take the queue's events; a
member's hears only that member's own runs (and batches) and no queue
events. A subscription sees and changes only its owner (or an admin). The
URL is checked when it is given: http(s) only, and no private address
named literally (`webhooks.safety`; host names are checked when sent).
Every change tells the outbox, here and on other hosts, to read again
which events are wanted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update

from testqueue import errors
from testqueue.database import Conn, Database
from testqueue.models import (
    Suite,
    TestCase,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from testqueue.queue import deliveries, dialect, outbox
from testqueue.schemas.webhooks import (
    AttemptPublic,
    DeliveryDetail,
    DeliveryPage,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPublic,
    WebhookUpdate,
)
from testqueue.services.accounts import Actor
from testqueue.vocabulary import decode_tags, encode_tags
from testqueue.webhooks import safety

S = WebhookSubscription
D = WebhookDelivery
SECRET_BYTES = 32


def _public(row: Any) -> WebhookPublic:
    return WebhookPublic(
        **{name: row[name] for name in WebhookPublic.model_fields if name != "events"},
        events=decode_tags(row["events"]),
    )


def _visible(actor: Actor) -> Any:
    return S.user_id == actor.id if not actor.is_admin else S.id.is_not(None)


def _check_events(actor: Actor, events: Sequence[str]) -> None:
    queue_events = sorted(set(events) & set(outbox.QUEUE_EVENTS))
    if queue_events and not actor.is_admin:
        raise errors.Forbidden(
            f"only an admin may subscribe to {', '.join(queue_events)}; members hear their "
            "own runs' events"
        )


async def _check_refs(conn: Conn, test_case_id: int | None, suite_id: int | None) -> None:
    if test_case_id is not None:
        found = select(TestCase.id).where(
            TestCase.id == test_case_id, TestCase.archived_at.is_(None)
        )
        if (await conn.execute(found)).first() is None:
            raise errors.NotFound(f"test case {test_case_id} does not exist or was deleted")
    suite = select(Suite.id).where(Suite.id == suite_id)
    if suite_id is not None and (await conn.execute(suite)).first() is None:
        raise errors.NotFound(f"suite {suite_id} does not exist")


async def _changed(conn: Conn, db: Database) -> None:
    """The events wanted changed: this process reads them again, other hosts are told."""
    outbox.forget(db)
    await dialect.signal(db, conn, outbox.CHANGED_SIGNAL)


async def create_webhook(db: Database, body: WebhookCreate, actor: Actor) -> WebhookCreated:
    _check_events(actor, body.events)
    url = safety.check_url(body.url, db.settings.webhook_allow_private)
    secret = body.secret or secrets.token_hex(SECRET_BYTES)
    async with db.write() as conn:
        await _check_refs(conn, body.test_case_id, body.suite_id)
        row = (
            (
                await conn.execute(
                    insert(S)
                    .values(
                        user_id=actor.id,
                        url=url,
                        secret=secret,
                        events=encode_tags(body.events),
                        test_case_id=body.test_case_id,
                        suite_id=body.suite_id,
                        tag=body.tag.lower() if body.tag else None,
                        payload_format=body.payload_format,
                        own_runs_only=not actor.is_admin,
                        active=body.active,
                        created_at=utcnow(),
                    )
                    .returning(*S.__table__.c)
                )
            )
            .mappings()
            .one()
        )
        await _changed(conn, db)
    outbox.forget(db)
    return WebhookCreated(**_public(row).model_dump(), secret=secret)


async def _load(conn: Conn, webhook_id: int, actor: Actor) -> Any:
    row = (
        (await conn.execute(select(S.__table__).where(S.id == webhook_id))).mappings().one_or_none()
    )
    if row is None:
        raise errors.NotFound(f"webhook {webhook_id} does not exist")
    if not actor.is_admin and row["user_id"] != actor.id:
        raise errors.Forbidden(f"webhook {webhook_id} belongs to another user")
    return row


async def list_webhooks(db: Database, actor: Actor, limit: int, offset: int) -> WebhookPage:
    """Your subscriptions; an admin's list has everyone's."""
    async with db.read() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(S).where(_visible(actor)))
        ).scalar_one()
        rows = await conn.execute(
            select(S.__table__).where(_visible(actor)).order_by(S.id).limit(limit).offset(offset)
        )
        items = [_public(row) for row in rows.mappings()]
    return WebhookPage(items=items, total=total, limit=limit, offset=offset)


async def read_webhook(db: Database, webhook_id: int, actor: Actor) -> WebhookPublic:
    async with db.read() as conn:
        return _public(await _load(conn, webhook_id, actor))


async def update_webhook(
    db: Database, webhook_id: int, changes: WebhookUpdate, actor: Actor
) -> WebhookPublic:
    """Change the fields given; null clears a filter."""
    given = changes.model_dump(exclude_unset=True)
    if "events" in given:
        _check_events(actor, given["events"])
        given["events"] = encode_tags(given["events"])
    if "url" in given:
        given["url"] = safety.check_url(given["url"], db.settings.webhook_allow_private)
    if given.get("tag"):
        given["tag"] = given["tag"].lower()
    async with db.write() as conn:
        await _load(conn, webhook_id, actor)
        await _check_refs(conn, given.get("test_case_id"), given.get("suite_id"))
        if given:
            await conn.execute(update(S).where(S.id == webhook_id).values(**given))
            await _changed(conn, db)
        row = await _load(conn, webhook_id, actor)
    outbox.forget(db)
    return _public(row)


async def delete_webhook(db: Database, webhook_id: int, actor: Actor) -> None:
    """Delete a subscription with its deliveries (pending ones are not sent)."""
    async with db.write() as conn:
        await _load(conn, webhook_id, actor)
        await conn.execute(delete(S).where(S.id == webhook_id))
        await _changed(conn, db)
    outbox.forget(db)


def _delivery(row: Any) -> DeliveryPublic:
    return DeliveryPublic(**{name: row[name] for name in DeliveryPublic.model_fields})


def _deliveries_of(webhook_id: int, state: str | None) -> Select[Any]:
    found = select(D.__table__).where(D.subscription_id == webhook_id)
    return found.where(D.state == state) if state else found


async def list_deliveries(
    db: Database, webhook_id: int, actor: Actor, state: str | None, limit: int, offset: int
) -> DeliveryPage:
    """A subscription's deliveries, newest first."""
    async with db.read() as conn:
        await _load(conn, webhook_id, actor)
        chosen = _deliveries_of(webhook_id, state).subquery()
        total = (await conn.execute(select(func.count()).select_from(chosen))).scalar_one()
        rows = await conn.execute(
            _deliveries_of(webhook_id, state).order_by(D.id.desc()).limit(limit).offset(offset)
        )
        items = [_delivery(row) for row in rows.mappings()]
    return DeliveryPage(items=items, total=total, limit=limit, offset=offset)


async def read_delivery(
    db: Database, webhook_id: int, delivery_id: int, actor: Actor
) -> DeliveryDetail:
    """One delivery with every attempt."""
    async with db.read() as conn:
        await _load(conn, webhook_id, actor)
        row = (
            (
                await conn.execute(
                    select(D.__table__).where(D.id == delivery_id, D.subscription_id == webhook_id)
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise errors.NotFound(f"webhook {webhook_id} has no delivery {delivery_id}")
        tries = await _attempts(conn, [delivery_id])
    return DeliveryDetail(**_delivery(row).model_dump(), tries=tries[delivery_id])


async def latest_deliveries(
    db: Database, webhook_id: int, actor: Actor, limit: int
) -> tuple[list[DeliveryDetail], int]:
    """A subscription's latest deliveries, newest first, each with every attempt (read
    in one query), and how many it has in all."""
    found = await list_deliveries(db, webhook_id, actor, None, limit, 0)
    async with db.read() as conn:
        tries = await _attempts(conn, [d.id for d in found.items])
    details = [DeliveryDetail(**d.model_dump(), tries=tries[d.id]) for d in found.items]
    return details, found.total


async def _attempts(conn: Conn, delivery_ids: list[int]) -> dict[int, list[AttemptPublic]]:
    """The attempts of each delivery, oldest first."""
    found: dict[int, list[AttemptPublic]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return found
    rows = await conn.execute(
        select(WebhookAttempt.__table__)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.id)
    )
    for t in rows.mappings():
        found[t["delivery_id"]].append(
            AttemptPublic(**{name: t[name] for name in AttemptPublic.model_fields})
        )
    return found


async def send_again(db: Database, webhook_id: int, delivery_id: int, actor: Actor) -> None:
    """Send a delivered or failed delivery again, now (same id: receivers may drop it)."""
    await read_delivery(db, webhook_id, delivery_id, actor)
    await deliveries.send_again(db, delivery_id)
