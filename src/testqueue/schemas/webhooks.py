"""API models of webhooks: subscriptions, their deliveries and each attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from testqueue.schemas.common import (
    MAX_URL_CHARS,
    NoNul,
    Strict,
    SuiteRef,
    Tag,
    TestCaseRef,
    Timestamped,
)
from testqueue.vocabulary import DeliveryState as DeliveryState
from testqueue.vocabulary import PayloadFormat as PayloadFormat
from testqueue.vocabulary import WebhookEvent

Event = WebhookEvent
# The address rules (public addresses only) are checked when the URL is given.
WebhookUrl = Annotated[
    str,
    StringConstraints(
        min_length=8,
        max_length=MAX_URL_CHARS,
        strip_whitespace=True,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
    ),
    NoNul("the URL"),
]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=200), NoNul("the secret")]


class WebhookCreate(Strict):
    """A subscription: where to send which events; without `secret` one is made for you."""

    url: WebhookUrl
    events: list[Event] = Field(min_length=1, max_length=8)
    secret: Secret | None = None
    test_case_id: TestCaseRef | None = None
    suite_id: SuiteRef | None = Field(
        default=None, description="only runs queued from this suite (batches of it)"
    )
    tag: Tag | None = None
    payload_format: PayloadFormat = PayloadFormat.JSON
    active: bool = True


class WebhookUpdate(Strict):
    """The fields to change; `test_case_id`, `suite_id` and `tag` may be set to null
    (no such filter), the others may only be left out."""

    url: WebhookUrl = None  # type: ignore[assignment]
    events: list[Event] = Field(default=None, min_length=1, max_length=8)  # type: ignore[arg-type]
    secret: Secret = None  # type: ignore[assignment]
    test_case_id: TestCaseRef | None = None
    suite_id: SuiteRef | None = None
    tag: Tag | None = None
    payload_format: PayloadFormat = None  # type: ignore[assignment]
    active: bool = None  # type: ignore[assignment]


class WebhookPublic(Timestamped):
    id: int
    user_id: int
    url: str
    events: list[str]
    test_case_id: int | None
    suite_id: int | None
    tag: str | None
    payload_format: str
    own_runs_only: bool
    active: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    """The subscription, with its secret: shown this once."""

    secret: str


class WebhookPage(BaseModel):
    items: list[WebhookPublic]
    total: int
    limit: int
    offset: int


class AttemptPublic(Timestamped):
    number: int
    at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class DeliveryPublic(Timestamped):
    id: int
    subscription_id: int
    event: str
    subject: str
    execution_id: int | None
    batch_id: int | None
    state: str
    attempts: int
    occurred_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None


class DeliveryDetail(DeliveryPublic):
    """A delivery with every attempt, oldest first."""

    tries: list[AttemptPublic]


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int
