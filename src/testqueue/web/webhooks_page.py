"""Webhooks in the dashboard: subscriptions, their deliveries with each attempt, send again.

The rules are `services.webhooks`, as in the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from testqueue import errors
from testqueue.schemas.common import problem_text
from testqueue.schemas.webhooks import WebhookCreate
from testqueue.services import webhooks
from testqueue.state import get_state
from testqueue.vocabulary import MAX_BIGINT, MAX_INT_ID, PayloadFormat, WebhookEvent, parse_id
from testqueue.web import forms
from testqueue.web.render import PageRoute, done, page
from testqueue.web.session import ChangingViewer, CurrentViewer, Viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

WebhookId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
EVENTS = [event.value for event in WebhookEvent]
FORMATS = [kind.value for kind in PayloadFormat]
SHOWN = 50  # deliveries on a subscription's page
FIELDS = ("url", "secret", "test_case_id", "suite_id", "tag", "payload_format")


async def _list_page(
    request: Request, viewer: Viewer, values: dict[str, Any], problem: str, status_code: int = 200
) -> Response:
    found = await webhooks.list_webhooks(get_state(request).db, viewer.actor, 500, 0)
    return page(
        request, "webhooks.html", viewer, status_code=status_code,
        found=found, values=values, problem_text=problem, events=EVENTS, formats=FORMATS,
        created=None,
    )  # fmt: skip


def _blank() -> dict[str, Any]:
    return {
        **dict.fromkeys(FIELDS, ""),
        "payload_format": PayloadFormat.JSON.value,
        "events": ["execution.finished"],
    }


@router.get("/webhooks")
async def list_webhooks(request: Request, viewer: CurrentViewer) -> Response:
    """Your subscriptions (an admin's list has everyone's), and a form for a new one."""
    return await _list_page(request, viewer, _blank(), "")


def _values(form: FormData) -> dict[str, Any]:
    return {**{name: forms.text(form, name) for name in FIELDS}, "events": form.getlist("events")}


def _ref(values: dict[str, Any], name: str) -> int | None:
    raw = str(values[name]).strip()
    if not raw:
        return None
    found = parse_id(raw)
    if found is None:
        raise errors.InvalidInput(f"{name.replace('_', ' ')}: a whole number, or nothing")
    return found


def _body(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": values["url"],
        "events": values["events"],
        "secret": values["secret"] or None,
        "test_case_id": _ref(values, "test_case_id"),
        "suite_id": _ref(values, "suite_id"),
        "tag": values["tag"].strip() or None,
        "payload_format": values["payload_format"] or PayloadFormat.JSON.value,
    }


@router.post("/webhooks")
async def create_webhook(request: Request, viewer: ChangingViewer) -> Response:
    """Subscribe a URL; the page shows the secret once."""
    values = _values(await forms.read(request))
    state = get_state(request)
    try:
        body = WebhookCreate.model_validate(_body(values))
        made = await webhooks.create_webhook(state.db, body, viewer.actor)
    except ValidationError as exc:
        return await _list_page(request, viewer, values, problem_text(exc.errors()[0]), 422)
    except (errors.InvalidInput, errors.Forbidden, errors.NotFound) as exc:
        return await _list_page(request, viewer, values, exc.message, exc.status_code)
    found = await webhooks.list_webhooks(state.db, viewer.actor, 500, 0)
    return page(
        request, "webhooks.html", viewer, status_code=201,
        found=found, values=_blank(), problem_text="", events=EVENTS, formats=FORMATS,
        created=made,
    )  # fmt: skip


@router.get("/webhooks/{webhook_id:int}")
async def show_webhook(request: Request, webhook_id: WebhookId, viewer: CurrentViewer) -> Response:
    """One subscription and its latest deliveries, each with its attempts."""
    db = get_state(request).db
    hook = await webhooks.read_webhook(db, webhook_id, viewer.actor)
    details, total = await webhooks.latest_deliveries(db, webhook_id, viewer.actor, SHOWN)
    return page(request, "webhook.html", viewer, hook=hook, deliveries=details, total=total)


@router.post("/webhooks/{webhook_id:int}/delete")
async def delete_webhook(
    request: Request, webhook_id: WebhookId, viewer: ChangingViewer
) -> Response:
    """Delete a subscription and its deliveries."""
    await forms.confirmed(request, "the webhook should be deleted")
    await webhooks.delete_webhook(get_state(request).db, webhook_id, viewer.actor)
    return done(request, "Webhook deleted.", "/webhooks")


@router.post("/webhooks/{webhook_id:int}/deliveries/{delivery_id:int}/redeliver")
async def redeliver(
    request: Request, webhook_id: WebhookId, delivery_id: DeliveryId, viewer: ChangingViewer
) -> Response:
    """Send a delivered or failed delivery again."""
    await webhooks.send_again(get_state(request).db, webhook_id, delivery_id, viewer.actor)
    return done(request, f"Delivery {delivery_id} will be sent again.", f"/webhooks/{webhook_id}")
