"""The finish journal on its own: records written whole, torn ones skipped, kept short."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testqueue import journal
from testqueue.queue import Finished
from testqueue.vocabulary import Result

WORKER = "host:1:abcd1234"


def finished(execution_id: int, attempt: int = 1, **fields: object) -> Finished:
    values: dict[str, object] = {
        "id": execution_id,
        "attempt": attempt,
        "result": Result.PASS,
        "exit_code": 0,
        "error_message": None,
        "steps": (3, 2, 1, 0),
        "priority": 5,
        "queued_at": datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Finished(**values)  # type: ignore[arg-type]


def on_disk(kept: journal.Journal) -> list[journal.Entry]:
    kept.flush()
    return journal.parse(kept.path.read_bytes(), kept.path)


async def test_finishes_read_back_whole(tmp_path: Path) -> None:
    kept = journal.Journal(tmp_path, WORKER)
    done = [finished(1), finished(2, result=Result.FAIL, exit_code=3, error_message="boom")]
    for item in done:
        kept.append(item)
    entries = on_disk(kept)
    assert [e.finished() for e in entries] == done
    assert {e.worker_id for e in entries} == {WORKER}
    kept.close()
    assert kept.path.exists(), "records not yet recorded stay for recovery"


async def test_finishes_handed_over_together_go_out_in_one_write(tmp_path: Path) -> None:
    kept = journal.Journal(tmp_path, WORKER)
    writes: list[int] = []
    write = kept._write

    def counted(entries: list[journal.Entry]) -> None:
        writes.append(len(entries))
        write(entries)

    kept._write = counted  # type: ignore[method-assign]
    for n in range(1, 51):
        kept.append(finished(n))
    async with asyncio.timeout(10):  # the write is due WRITE_AFTER_S after the first
        while not writes:
            await asyncio.sleep(journal.WRITE_AFTER_S)
    assert writes == [50]
    assert len(journal.parse(kept.path.read_bytes(), kept.path)) == 50
    kept.close()


def test_a_torn_or_damaged_record_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = [journal.Entry.of(WORKER, finished(n)) for n in (1, 2, 3)]
    lines = [journal.line([entry]) for entry in whole]
    damaged = lines[1].replace(b'",2,1,', b'",2,7,')  # its checksum no longer matches
    assert damaged != lines[1]
    torn = lines[2][: len(lines[2]) // 2]  # the crash came mid-write
    with caplog.at_level(logging.WARNING):
        entries = journal.parse(lines[0] + damaged + torn, tmp_path / "torn.journal")
    assert entries == [whole[0]]
    assert len([r for r in caplog.records if "not written whole" in r.getMessage()]) == 2


async def test_recorded_records_go_and_the_file_stays_short(tmp_path: Path) -> None:
    kept = journal.Journal(tmp_path, WORKER)
    sizes = []
    for round_ in range(2000):
        done = [finished(round_ * 5 + n) for n in range(1, 6)]
        for item in done:
            kept.append(item)
        kept.flush()
        kept.recorded(done)
        sizes.append(kept.path.stat().st_size)
    batch = journal.line([journal.Entry.of(WORKER, finished(n)) for n in range(9000, 9005)])
    assert max(sizes) <= journal.CUT_BYTES + len(batch)
    kept.close()
    assert not kept.path.exists(), "an empty journal is removed at a clean stop"


async def test_records_still_waiting_survive_compaction(tmp_path: Path) -> None:
    kept = journal.Journal(tmp_path, WORKER)
    waiting = finished(1)
    kept.append(waiting)
    big = [finished(n, error_message="x" * 2000) for n in range(2, 700)]
    for item in big:
        kept.append(item)
    kept.flush()
    kept.recorded(big)
    kept.append(finished(700))  # past COMPACT_BYTES: rewritten with those still waiting
    entries = on_disk(kept)
    assert [e.id for e in entries] == [1, 700]
    assert kept.path.stat().st_size < 1000
    kept.close()


def test_only_the_journals_of_gone_workers_are_taken(tmp_path: Path) -> None:
    boot = "abcd1234"
    line = journal.line([journal.Entry.of(WORKER, finished(1))])
    alive_pid, dead_pid = os.getppid(), 2**22 + 7
    for pid, worker in (
        (alive_pid, f"h:{alive_pid}:{boot}"),
        (dead_pid, f"h:{dead_pid}:{boot}"),
        (alive_pid, f"h:{alive_pid}:before-reboot"),  # its pid went to another process since
        (os.getpid(), f"h:{os.getpid()}:{boot}"),  # this process's own
    ):
        (tmp_path / f"{pid}.{worker}{journal.SUFFIX}").write_bytes(line)

    def alive(pid: int) -> bool:
        return pid != dead_pid

    taken = list(journal.left_behind(tmp_path, alive, boot))
    names = sorted(path.name.split(".")[1] for path, _ in taken)
    assert names == sorted([f"h:{dead_pid}:{boot}", f"h:{alive_pid}:before-reboot"])
    assert all(len(entries) == 1 for _, entries in taken)
    # Taken by renaming: a second worker starting now finds nothing left to take.
    assert list(journal.left_behind(tmp_path, alive, boot)) == []
