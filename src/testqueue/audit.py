"""The audit trail: who did what that matters to others, written in the transaction of
the change it reports, so a change and its note are kept or lost together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from testqueue.database import Conn
from testqueue.models import AuditEntry, utcnow


@dataclass(frozen=True)
class Note:
    """One line of the trail: `action` by the actor, on `target`."""

    actor_id: int | None  # None: someone at the console (`testqueue user ...`)
    actor_name: str
    action: str
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


async def write(conn: Conn, note: Note | None) -> None:
    """Add `note` to the trail inside the caller's transaction (None: nothing to note)."""
    if note is None:
        return
    await conn.execute(
        insert(AuditEntry).values(
            at=utcnow(),
            actor_id=note.actor_id,
            actor_name=note.actor_name,
            action=note.action,
            target=note.target[:200],
            detail=note.detail,
        )
    )
