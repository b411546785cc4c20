"""Reading the audit trail (admins only); `testqueue.audit` writes it."""

from __future__ import annotations

from sqlalchemy import func, select

from testqueue.database import Database
from testqueue.models import AuditEntry
from testqueue.schemas import AuditEntryPublic, AuditPage
from testqueue.services.accounts import Actor


async def read(db: Database, actor: Actor, limit: int, offset: int) -> AuditPage:
    """The newest entries first."""
    actor.require_admin()
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        rows = await conn.execute(
            select(AuditEntry.__table__).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
        )
        items = [AuditEntryPublic.model_validate(dict(row)) for row in rows.mappings()]
    return AuditPage(items=items, total=total, limit=limit, offset=offset)
