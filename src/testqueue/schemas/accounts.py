"""API models of accounts, tokens and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from testqueue.schemas.common import (
    NoNul,
    Strict,
    Timestamped,
    TokenDays,
)
from testqueue.vocabulary import (
    Role,
)

# -- accounts ------------------------------------------------------------------------------


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
]


class UserCreate(Strict):
    username: Username
    password: Password
    role: Role = Role.MEMBER


class UserChange(Strict):
    """An admin's change to an account; fields left out stay as they are."""

    role: Role | None = None
    is_active: bool | None = Field(default=None, strict=True)


class PasswordChange(Strict):
    current_password: Annotated[str, StringConstraints(max_length=256)]
    new_password: Password


class PasswordReset(Strict):
    password: Password


class AccessTokenCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), NoNul()]
    expires_in_days: TokenDays | None = Field(
        default=None,
        description="days until the token stops working; none for no expiry",
    )


class AccessTokenPublic(Timestamped):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class AccessTokenCreated(AccessTokenPublic):
    token: str = Field(description="the token itself: shown this once, keep it now")


class AuditEntryPublic(Timestamped):
    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    total: int
    limit: int
    offset: int


class UserPublic(Timestamped):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime
