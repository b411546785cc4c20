"""A worker's journal of finished runs, on local disk, until the database has them.

A run's outcome reaches the database at the dispatcher's next pass. Between
the runner's return and that commit, a crash of the worker (kill -9, the OOM
killer, a lost machine) would lose the outcome, and recovery would queue the
run again although its process finished. So the moment a runner returns, the
worker appends the outcome to a journal of its own
(`<JOURNAL_DIR>/<pid>.<worker id>.journal`), written within `WRITE_AFTER_S`
(1 ms): the finishes handed over meanwhile go out in one record and one
write. Once written, a record survives the process (the kernel holds it); `fdatasync`
puts it on the disk within `SYNC_EVERY_S` (20 ms), one flush for whatever was
written meanwhile, so a crash of the machine loses at most those 20 ms. The
write runs on the loop's thread (a thread for every write cost more in
hand-overs than the write); the flush, which can wait behind the
filesystem's other writes, on a thread of its own.

Recovery on the same host (a restarted worker, or a neighbour finding a dead
one: `Dispatcher`) reads a dead worker's journal before anything else and
records each journaled finish whose attempt is still the one running, as the
worker would have; only the runs without one go back in line.

Each record is one line: a compact JSON array of finishes, a tab, the CRC-32
of the JSON. A torn or damaged line (the crash came mid-write) is skipped with
a warning. The
journal stays short: past `CUT_BYTES`, once every record in it has reached
the database, it is cut to nothing, and past `COMPACT_BYTES` it is rewritten
with the records still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from testqueue.queue import Finished
from testqueue.vocabulary import Result

log = logging.getLogger(__name__)

SUFFIX = ".journal"
# Finishes are written this long after the first of them is handed over, all together.
WRITE_AFTER_S = 0.001
# Written records reach the disk within this long (`fdatasync`), in one flush however many
# they are: a crash of the process loses nothing written (the kernel has it); this bounds
# what a crash of the machine could.
SYNC_EVERY_S = 0.02
# Once past this size the file is cut, when every record in it is recorded: cutting it
# after each pass would make every flush write the file's metadata again.
CUT_BYTES = 64 << 10
# A dead worker's journal while a live one records it: `<name>.<its pid>.recovering`.
RECOVERING = ".recovering"
# Past this size the journal is rewritten with only the records still waiting.
COMPACT_BYTES = 1 << 20


class Entry(NamedTuple):
    """One journaled finish: what `queue.settle` needs to record it, and who held the run.

    A tuple (cheap to make on the hot path), written as a JSON array in field order.
    """

    worker_id: str
    id: int
    attempt: int
    result: str | None
    exit_code: int | None
    error_message: str | None
    steps: tuple[int, int, int, int]
    priority: int
    queued_at: str | None
    retry: bool

    @classmethod
    def of(cls, worker_id: str, done: Finished) -> Entry:
        return cls(
            worker_id=worker_id,
            id=done.id,
            attempt=done.attempt,
            result=done.result.value if done.result is not None else None,
            exit_code=done.exit_code,
            error_message=done.error_message,
            steps=done.steps,
            priority=done.priority,
            queued_at=done.queued_at.isoformat() if done.queued_at is not None else None,
            retry=done.retry,
        )

    def finished(self) -> Finished:
        """The finish as the worker had it, without its log (what was saved so far stays)."""
        return Finished(
            id=self.id,
            attempt=self.attempt,
            result=Result(self.result) if self.result is not None else None,
            exit_code=self.exit_code,
            error_message=self.error_message,
            steps=self.steps,
            priority=self.priority,
            queued_at=datetime.fromisoformat(self.queued_at) if self.queued_at else None,
            retry=self.retry,
        )


def line(entries: list[Entry]) -> bytes:
    """One record of a batch of finishes: a JSON array of them, a tab, its CRC-32."""
    text = json.dumps(entries, separators=(",", ":")).encode()
    return b"%s\t%08x\n" % (text, zlib.crc32(text))


def parse(data: bytes, path: Path) -> list[Entry]:
    """The finishes of a journal's whole records; a torn or damaged one is skipped with a
    warning."""
    entries: list[Entry] = []
    pieces = data.split(b"\n")
    for number, raw in enumerate(pieces, start=1):
        if not raw:
            continue
        text, _, crc = raw.rpartition(b"\t")
        try:
            if number == len(pieces):  # no newline after it: cut off mid-write
                raise ValueError("the record has no end")
            if b"%08x" % zlib.crc32(text) != crc:
                raise ValueError("the record's checksum does not match")
            entries.extend(Entry(*f)._replace(steps=tuple(f[6])) for f in json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning(
                "skipped a journal record that was not written whole",
                extra={"journal": str(path), "line": number, "error": str(exc)},
            )
    return entries


class Journal:
    """This worker's journal: finishes go in, on disk before the event loop's next turn;
    recorded ones go when the file is next cut."""

    def __init__(self, folder: Path, worker_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}.{worker_id}{SUFFIX}"
        self._worker_id = worker_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._queued: dict[tuple[int, int], Finished] = {}  # handed over, not yet written
        self._due = False  # a write is scheduled
        self._waiting: dict[tuple[int, int], Entry] = {}  # journaled, not yet recorded
        self._size = 0
        # The flush to disk runs on a thread of its own: an `fdatasync` can wait behind the
        # filesystem's other writes (seconds, under a database's checkpoint) and must never
        # hold up the event loop. At most one is due or under way at a time.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-sync")
        self._sync_due = False
        self._next_sync: asyncio.TimerHandle | None = None

    def append(self, done: Finished) -> None:
        """Journal this finish: written within `WRITE_AFTER_S`, with every other finish handed
        over meanwhile (one record for them all), and flushed to disk within `SYNC_EVERY_S`."""
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_later(WRITE_AFTER_S, self.flush)
        self._queued[(done.id, done.attempt)] = done

    def recorded(self, done: Iterable[Finished]) -> None:
        """These finishes are in the database now: their records go when the file is next cut."""
        for item in done:
            key = (item.id, item.attempt)
            if self._waiting.pop(key, None) is None:
                self._queued.pop(key, None)  # recorded before it was written: no need to

    def flush(self) -> None:
        """Write and flush what was handed over (a no-op when nothing was)."""
        queued, self._queued = self._queued, {}
        self._due = False
        try:
            if self._size >= CUT_BYTES and (not self._waiting or self._size >= COMPACT_BYTES):
                self._compact(list(self._waiting.values()))
            if queued:
                self._write([Entry.of(self._worker_id, done) for done in queued.values()])
        except OSError as exc:
            log.warning(
                "could not write the journal: these runs would run again after a crash",
                extra={"journal": str(self.path), "error": str(exc)},
            )

    def _write(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._waiting[(entry.id, entry.attempt)] = entry
        data = line(entries)
        os.write(self._fd, data)
        self._size += len(data)
        if not self._sync_due:
            self._sync_due = True
            self._next_sync = asyncio.get_running_loop().call_later(SYNC_EVERY_S, self._sync)

    def _sync(self) -> None:
        """Flush what was written so far; what is written meanwhile waits for the next one."""
        loop = asyncio.get_running_loop()
        synced = loop.run_in_executor(self._syncer, os.fdatasync, self._fd)
        synced.add_done_callback(self._synced)

    def _synced(self, synced: asyncio.Future[None]) -> None:
        self._sync_due = False
        if not synced.cancelled() and synced.exception() is not None:
            log.warning(
                "could not flush the journal to disk",
                extra={"journal": str(self.path), "error": str(synced.exception())},
            )

    def _compact(self, keep: list[Entry]) -> None:
        """Cut the file down to the records still waiting (usually none)."""
        if not keep:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        fresh = self.path.with_name(self.path.name + ".new")
        data = line(keep)
        with open(fresh, "wb") as out:
            out.write(data)
            out.flush()
            os.fdatasync(out.fileno())
        os.replace(fresh, self.path)
        # The same descriptor number now names the new file: a flush under way on the
        # other thread keeps the old one until it returns.
        opened = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.dup2(opened, self._fd)
        os.close(opened)
        self._size = len(data)

    def close(self) -> None:
        """Write what is queued and stop; an empty journal is removed, one with records stays
        for the next start on this host to record."""
        self.flush()
        if self._next_sync is not None:
            self._next_sync.cancel()
        self._syncer.shutdown(wait=True)
        with contextlib.suppress(OSError):
            os.fdatasync(self._fd)
        os.close(self._fd)
        if not self._waiting:
            self.path.unlink(missing_ok=True)


def left_behind(
    folder: Path, is_alive: Callable[[int], bool], boot: str
) -> Iterator[tuple[Path, list[Entry]]]:
    """The journals of gone workers of this host, each taken by renaming it first (so two
    workers starting at once never both record one), with their records.

    A worker is gone when its process is, or when its id names another boot (`boot`,
    the digest that ends a worker id): its pid may have been given to a new process.
    """
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        pid, _, rest = path.name.partition(".")
        worker_id = rest.removesuffix(SUFFIX)
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if worker_id.rsplit(":", 1)[-1] == boot and is_alive(int(pid)):
            continue
        yield from _take(path, path.name)
    # Taken by a worker that died while recording it: take it again.
    for path in sorted(folder.glob(f"*{SUFFIX}.*{RECOVERING}")):
        name, _, holder = path.name.removesuffix(RECOVERING).rpartition(".")
        if holder.isdigit() and int(holder) != os.getpid() and not is_alive(int(holder)):
            yield from _take(path, name)


def _take(path: Path, name: str) -> Iterator[tuple[Path, list[Entry]]]:
    taken = path.with_name(f"{name}.{os.getpid()}{RECOVERING}")
    try:
        path.rename(taken)
    except FileNotFoundError:
        return  # another worker took it first
    yield taken, parse(taken.read_bytes(), taken)
