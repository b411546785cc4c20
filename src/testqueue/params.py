"""Path and query parameters shared by the API and the dashboard, bounded by the vocabulary.

A number past a column's range cannot be bound to a query at all, so each
id is refused as bad input (422, or an error page) before it reaches the
database; both sides use these same types, so they cannot disagree.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from testqueue.vocabulary import MAX_BIGINT, MAX_EXECUTION_ID, MAX_INT_ID

TestCaseId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
ExecutionId = Annotated[int, Path(ge=1, le=MAX_EXECUTION_ID)]
ArtifactId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
UserId = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_BIGINT)]
