"""Webhooks: subscriptions, their deliveries and attempts (the rules are `services.webhooks`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from testqueue.api.contract import errors
from testqueue.api.deps import CurrentActor, State
from testqueue.params import Offset
from testqueue.schemas import MAX_PAGE_SIZE
from testqueue.schemas.webhooks import (
    DeliveryDetail,
    DeliveryPage,
    DeliveryState,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPublic,
    WebhookUpdate,
)
from testqueue.services import webhooks
from testqueue.vocabulary import MAX_BIGINT, MAX_INT_ID

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
WebhookId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


@router.get("")
async def list_webhooks(
    state: State, actor: CurrentActor, limit: Limit = 50, offset: Offset = 0
) -> WebhookPage:
    """Your subscriptions (an admin sees everyone's)."""
    return await webhooks.list_webhooks(state.db, actor, limit, offset)


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(403, 404, 422))
async def create_webhook(state: State, body: WebhookCreate, actor: CurrentActor) -> WebhookCreated:
    """Subscribe a URL to events; the answer holds the signing secret, shown this once.

    Members hear their own runs only; queue events are for admins. A URL that
    names a private address is refused unless WEBHOOK_ALLOW_PRIVATE is set.
    """
    return await webhooks.create_webhook(state.db, body, actor)


@router.get("/{webhook_id}", responses=errors(403, 404))
async def read_webhook(state: State, webhook_id: WebhookId, actor: CurrentActor) -> WebhookPublic:
    """One subscription (yours, or any for an admin)."""
    return await webhooks.read_webhook(state.db, webhook_id, actor)


@router.put("/{webhook_id}", responses=errors(403, 404, 422))
async def update_webhook(
    state: State, webhook_id: WebhookId, body: WebhookUpdate, actor: CurrentActor
) -> WebhookPublic:
    """Change the fields given; null clears a filter."""
    return await webhooks.update_webhook(state.db, webhook_id, body, actor)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(403, 404))
async def delete_webhook(state: State, webhook_id: WebhookId, actor: CurrentActor) -> Response:
    """Delete a subscription and its deliveries."""
    await webhooks.delete_webhook(state.db, webhook_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", responses=errors(403, 404))
async def list_deliveries(
    state: State,
    webhook_id: WebhookId,
    actor: CurrentActor,
    delivery_state: Annotated[DeliveryState | None, Query(alias="state")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DeliveryPage:
    """A subscription's deliveries, newest first (`state`: pending, delivered, failed)."""
    return await webhooks.list_deliveries(
        state.db, webhook_id, actor, delivery_state, limit, offset
    )


@router.get("/{webhook_id}/deliveries/{delivery_id}", responses=errors(403, 404))
async def read_delivery(
    state: State, webhook_id: WebhookId, delivery_id: DeliveryId, actor: CurrentActor
) -> DeliveryDetail:
    """One delivery with every attempt: status code, duration, error."""
    return await webhooks.read_delivery(state.db, webhook_id, delivery_id, actor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(403, 404, 409),
)
async def redeliver(
    state: State, webhook_id: WebhookId, delivery_id: DeliveryId, actor: CurrentActor
) -> DeliveryDetail:
    """Send a delivered or failed delivery again, now, with the same delivery id."""
    await webhooks.send_again(state.db, webhook_id, delivery_id, actor)
    return await webhooks.read_delivery(state.db, webhook_id, delivery_id, actor)
