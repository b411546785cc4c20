"""The audit trail: who cleared, paused, changed slots or accounts, stopped others' runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from testqueue.api.contract import errors
from testqueue.api.deps import AdminActor, State
from testqueue.params import Offset
from testqueue.schemas import MAX_PAGE_SIZE, AuditPage
from testqueue.services import audit_trail

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", responses=errors(403))
async def read_audit(
    state: State,
    admin: AdminActor,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Offset = 0,
) -> AuditPage:
    """The newest entries first (admins only)."""
    return await audit_trail.read(state.db, admin, limit, offset)
