"""Artifacts kept in the database, in chunks, so any host can serve what any worker ran.

With `ARTIFACT_STORE=database` (the default on PostgreSQL) a worker sends each
file a run reports to `artifact_chunks` while the run goes on, and an API host
that shares no folder with it reads the file back from there. With `disk` (the
default on SQLite) the row names a file under `ARTIFACTS_DIR`, as it always did,
and this module is not used.

Storing one file:

1. its row is inserted with `stored` false (or, when it would take the run past
   `ARTIFACT_MAX_RUN_BYTES`, with `error` saying so and nothing else: a file is
   kept whole or not at all);
2. its bytes are read off the event loop and written `CHUNK_BYTES` at a time,
   each chunk in its own one-statement transaction, so a large file never holds
   the claim lock or keeps a dispatcher pass waiting;
3. the row is marked `stored`. Readers serve a file only from then on, so a
   worker that dies half way leaves a row that says so, never half a file.

The chunks go with their artifact row (ON DELETE CASCADE), which goes with its
execution: deleting an execution, or pruning it, removes its bytes too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import bindparam, delete, insert, select, update

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.models import Artifact, ArtifactChunk, utcnow
from testqueue.vocabulary import ArtifactRecord, StepRecord

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
DISK = "disk"
DATABASE = "database"


def location_for(settings: Settings) -> str:
    """Where this process keeps the artifacts its runs report: `disk` or `database`."""
    if settings.artifact_store == "auto":
        return DISK if settings.is_sqlite else DATABASE
    return settings.artifact_store


def size_text(size: int) -> str:
    """A byte count as people read it: `50 MiB`, `312.5 KiB`, `12 bytes`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class Kept:
    """What became of one file: its row, the bytes stored, or why it was not kept."""

    artifact_id: int
    size_bytes: int
    error: str | None = None


class RunLog(Protocol):
    """The part of a run's record that the uploads write to: its log and its attempt."""

    attempt: int

    def log(self, text: str) -> None: ...

    def step(self, step: StepRecord) -> None: ...


class RunUploads:
    """A run's `Reporter` when artifacts go to the database.

    Logs and steps go to the run's record as before; each artifact is stored as
    soon as it is reported, one after another (so the run's total is counted in
    order), while the run goes on. `wait` returns once every one is stored or
    refused: the dispatcher calls it before it records how the run ended.
    """

    def __init__(self, db: Database, record: RunLog, execution_id: int, max_bytes: int) -> None:
        self._db = db
        self._record = record
        self._execution_id = execution_id
        self._room = max_bytes
        self._max_bytes = max_bytes
        self._last: asyncio.Task[None] | None = None

    def log(self, text: str) -> None:
        self._record.log(text)

    def step(self, step: StepRecord) -> None:
        self._record.step(step)

    def artifact(self, artifact: ArtifactRecord) -> None:
        after, attempt = self._last, self._record.attempt
        self._last = asyncio.create_task(
            self._store_after(after, artifact, attempt),
            name=f"artifact-{self._execution_id}-{artifact.name}",
        )

    async def wait(self) -> None:
        """Until every artifact reported so far is stored or refused."""
        if self._last is not None:
            await asyncio.shield(self._last)

    async def _store_after(
        self, after: asyncio.Task[None] | None, artifact: ArtifactRecord, attempt: int
    ) -> None:
        if after is not None:
            await asyncio.wait({after})
        try:
            kept = await store_file(
                self._db, self._execution_id, attempt, artifact, self._room, self._max_bytes
            )
        except Exception as exc:
            log.warning(
                "artifact not stored",
                extra={
                    "execution_id": self._execution_id,
                    "artifact": artifact.name,
                    "error": repr(exc),
                },
            )
            self._record.log(f"\nartifact {artifact.name} was not kept: {exc!r}\n")
            return
        if kept.error is not None:
            self._record.log(f"\nartifact {artifact.name} was not kept: {kept.error}\n")
        self._room -= kept.size_bytes


async def store_file(
    db: Database,
    execution_id: int,
    attempt: int,
    artifact: ArtifactRecord,
    room: int,
    max_bytes: int,
) -> Kept:
    """Store one file of a run in chunks, whole, if `room` bytes (of `max_bytes`) hold it."""
    size = await asyncio.to_thread(_size_of, artifact.path)
    error = refusal(artifact.name, size, room, max_bytes)
    artifact_id = await _insert_row(db, execution_id, attempt, artifact, size or 0, error)
    if error is not None:
        return Kept(artifact_id, 0, error)
    try:
        written = await _write_chunks(db, artifact_id, artifact.path, room)
    except OSError as exc:
        error = f"the file could not be read: {exc}"
    except Exception as exc:  # the database went away mid-file: drop the half, say why
        error = f"storing it failed: {str(exc)[:200]}"
    else:
        error = refusal(artifact.name, written, room, max_bytes)
    if error is not None:
        await _refuse(db, artifact_id, error)
        return Kept(artifact_id, 0, error)
    async with db.write_one() as conn:
        await conn.execute(
            update(Artifact)
            .where(Artifact.id == artifact_id)
            .values(stored=True, size_bytes=written)
        )
    # The database holds it now; the worker's copy would only wait for the age-based clean-up.
    await asyncio.to_thread(artifact.path.unlink, missing_ok=True)
    log.info(
        "artifact stored",
        extra={"execution_id": execution_id, "artifact_id": artifact_id, "bytes": written},
    )
    return Kept(artifact_id, written)


def refusal(name: str, size: int | None, room: int, max_bytes: int) -> str | None:
    """Why a file of `size` bytes is not kept when `room` bytes are left, or None."""
    if size is None:
        return "the file was gone before it could be stored"
    if size > room:
        return (
            f"{name} has {size_text(size)} and this run's artifacts may take "
            f"{size_text(max_bytes)} in all (ARTIFACT_MAX_RUN_BYTES); "
            f"{size_text(max_bytes - room)} were kept before it"
        )
    return None


async def _insert_row(
    db: Database,
    execution_id: int,
    attempt: int,
    artifact: ArtifactRecord,
    size: int,
    error: str | None,
) -> int:
    row = {
        "execution_id": execution_id,
        "attempt": attempt,
        "kind": artifact.kind,
        "name": artifact.name,
        "path": str(artifact.path),
        "content_type": artifact.content_type,
        "size_bytes": size,
        "created_at": utcnow(),
        "location": DATABASE,
        "stored": False,
        "error": error,
    }
    async with db.write_one() as conn:
        inserted = await conn.execute(insert(Artifact).values(row).returning(Artifact.id))
        return int(inserted.scalar_one())


_CHUNK = insert(ArtifactChunk)


async def _write_chunks(db: Database, artifact_id: int, path: Path, room: int) -> int:
    """Write the file's chunks, each in its own short transaction; return the bytes read.

    Reading stops as soon as the file proves larger than `room` (it grew after
    it was measured): the caller then refuses it and drops what was written.
    """
    handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
    seq = read = 0
    try:
        while data := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            read += len(data)
            if read > room:
                break
            async with db.write_one() as conn:
                await conn.execute(_CHUNK, {"artifact_id": artifact_id, "seq": seq, "data": data})
            seq += 1
    finally:
        await asyncio.to_thread(handle.close)
    return read


async def _refuse(db: Database, artifact_id: int, error: str) -> None:
    """Record why a file was not kept, and drop what was written of it."""
    async with db.write() as conn:
        await conn.execute(delete(ArtifactChunk).where(ArtifactChunk.artifact_id == artifact_id))
        await conn.execute(
            update(Artifact).where(Artifact.id == artifact_id).values(error=error, size_bytes=0)
        )


_READ_CHUNK = select(ArtifactChunk.data).where(
    ArtifactChunk.artifact_id == bindparam("artifact_id"), ArtifactChunk.seq == bindparam("seq")
)


async def read_chunks(db: Database, artifact_id: int, size: int) -> AsyncIterator[bytes]:
    """A stored artifact's bytes, one chunk per read, no connection held between them."""
    sent = 0
    seq = 0
    while sent < size:
        async with db.read() as conn:
            data = (
                await conn.execute(_READ_CHUNK, {"artifact_id": artifact_id, "seq": seq})
            ).scalar_one_or_none()
        if data is None:  # its execution was deleted while it was being sent
            return
        yield bytes(data)
        sent += len(data)
        seq += 1


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None
