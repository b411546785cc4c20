"""Artifacts kept in the database, in chunks: stored whole or not at all, capped per run,
streamed back, removed with their execution; SQLite keeps files on disk by default."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy import func, select

from conftest import Api, make_settings, start_api
from gates import GateRunner, with_gate
from testqueue import artifacts
from testqueue.config import Settings
from testqueue.models import Artifact, ArtifactChunk
from testqueue.queue import artifact_store
from testqueue.runners import Registry
from testqueue.runners.base import Reporter, RunSpec
from testqueue.vocabulary import ArtifactRecord, Outcome, Result
from waiting import until

KIB = 1024
CAP = 1024 * KIB
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def content(name: str, size: int) -> bytes:
    """A file's bytes: PNG's signature, then bytes that differ at every chunk boundary."""
    return (PNG_MAGIC + random.Random(name).randbytes(size))[:size]


class FilesRunner:
    """Writes the files its test case lists (`test_data.files`: name, bytes) and reports each."""

    kind: ClassVar[str] = "files"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run(
        self, spec: RunSpec, *, deadline: float, cancel: Any, report: Reporter
    ) -> Outcome:
        folder = artifacts.execution_dir(self.settings, spec.execution_id)
        folder.mkdir(parents=True, exist_ok=True)
        for item in spec.test_data["files"]:
            path = folder / item["name"]
            path.write_bytes(content(item["name"], item["bytes"]))
            report.artifact(ArtifactRecord("screenshot", item["name"], path, "image/png"))
        report.log("files written\n")
        return Outcome(Result.PASS)

    async def close(self) -> None:
        return None


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path, artifact_store="database", artifact_max_run_bytes=CAP
    )


@pytest.fixture
def registry(settings: Settings, gate: GateRunner) -> Registry:
    registry = with_gate(Registry(settings), gate)
    registry.register("files", FilesRunner)
    return registry


async def run_files(api: Api, files: dict[str, int]) -> Any:
    """Run a `files` test case writing `files` (name: size) and wait until it ended."""
    listed = [{"name": name, "bytes": size} for name, size in files.items()]
    response = await api.client.post(
        "/api/v1/tests",
        json={"title": "files", "runner": "files", "test_data": {"files": listed}},
        headers=api.admin,
    )
    assert response.status_code == 201, response.text
    run = await api.run(int(response.json()["id"]))
    return await until(
        lambda: api.get(f"/executions/{run['id']}"), lambda d: d["status"] == "completed"
    )


async def chunk_counts(api: Api, artifact_ids: list[int]) -> list[int]:
    async with api.state.db.read() as conn:
        counted = select(func.count()).where(ArtifactChunk.artifact_id == Artifact.id)
        rows = await conn.execute(
            select(Artifact.id, counted.scalar_subquery()).where(Artifact.id.in_(artifact_ids))
        )
        found = {row[0]: row[1] for row in rows}
    return [found.get(i, 0) for i in artifact_ids]


async def test_files_are_stored_in_chunks_served_whole_and_removed_with_their_run(
    api: Api, settings: Settings
) -> None:
    sizes = {"big.png": 2 * artifact_store.CHUNK_BYTES + 88, "small.png": 10, "empty.png": 0}
    detail = await run_files(api, sizes)

    assert detail["result"] == "pass"
    listed = {a["name"]: a for a in detail["artifacts"]}
    assert {n: (a["stored"], a["error"], a["size_bytes"]) for n, a in listed.items()} == {
        name: (True, None, size) for name, size in sizes.items()
    }
    ids = [listed[name]["id"] for name in sizes]
    assert await chunk_counts(api, ids) == [3, 1, 0]
    # The worker's copy is gone once stored: what is served comes from the database.
    assert list(artifacts.execution_dir(settings, detail["id"]).iterdir()) == []
    for name, size in sizes.items():
        response = await api.client.get(listed[name]["url"], headers=api.admin)
        assert response.status_code == 200, response.text
        assert response.content == content(name, size)
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-length"] == str(size)
        assert response.headers["content-disposition"] == f'attachment; filename="{name}"'

    deleted = await api.client.delete(f"/api/v1/executions/{detail['id']}", headers=api.admin)
    assert deleted.status_code == 204
    assert await chunk_counts(api, ids) == [0, 0, 0]
    gone = await api.client.get(listed["big.png"]["url"], headers=api.admin)
    assert gone.status_code == 404


async def test_reading_streams_one_chunk_per_read(api: Api) -> None:
    size = 3 * artifact_store.CHUNK_BYTES + 5
    detail = await run_files(api, {"large.png": size})
    artifact_id = detail["artifacts"][0]["id"]

    pieces = [len(p) async for p in artifact_store.read_chunks(api.state.db, artifact_id, size)]

    assert pieces == [artifact_store.CHUNK_BYTES] * 3 + [5]


async def test_a_run_past_its_cap_keeps_what_fits_and_says_why(api: Api) -> None:
    sizes = {"first.png": 700 * KIB, "second.png": 400 * KIB, "third.png": 300 * KIB}
    detail = await run_files(api, sizes)

    listed = {a["name"]: a for a in detail["artifacts"]}
    assert [listed[n]["stored"] for n in sizes] == [True, False, True]
    error = listed["second.png"]["error"]
    assert error == (
        "second.png has 400 KiB and this run's artifacts may take 1 MiB in all "
        "(ARTIFACT_MAX_RUN_BYTES); 700 KiB were kept before it"
    )
    ids = [listed[n]["id"] for n in sizes]
    assert await chunk_counts(api, ids) == [3, 0, 2]
    refused = await api.client.get(listed["second.png"]["url"], headers=api.admin)
    assert refused.status_code == 404
    assert refused.json() == {"detail": f"artifact {ids[1]} was not kept: {error}"}
    third = await api.client.get(listed["third.png"]["url"], headers=api.admin)
    assert third.content == content("third.png", 300 * KIB)
    log = (await api.client.get(f"/api/v1/executions/{detail['id']}/log", headers=api.admin)).text
    assert f"artifact second.png was not kept: {error}" in log

    async with api.dashboard() as browser:
        page = (await browser.client.get(f"/executions/{detail['id']}")).text
        shown = await browser.client.get(f"/executions/{detail['id']}/artifacts/{ids[2]}")
    assert f"Not kept: {escape(error)}" in page
    assert f'src="/executions/{detail["id"]}/artifacts/{ids[0]}"' in page
    assert f'src="/executions/{detail["id"]}/artifacts/{ids[1]}"' not in page
    assert shown.headers["content-disposition"] == 'inline; filename="third.png"'
    assert shown.content == content("third.png", 300 * KIB)


async def test_an_upload_holds_neither_the_line_nor_a_read_of_half_a_file(
    api: Api, gate: GateRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a run's file is being written, other runs start and end; the run itself
    is recorded only once its file is stored, and until then the file is not served."""
    held, release = asyncio.Event(), asyncio.Event()
    write_chunks = artifact_store._write_chunks

    async def held_write(*args: Any) -> int:
        held.set()
        await release.wait()
        return await write_chunks(*args)

    monkeypatch.setattr(artifact_store, "_write_chunks", held_write)
    uploading = asyncio.create_task(run_files(api, {"slow.png": 300 * KIB}))
    await asyncio.wait_for(held.wait(), timeout=15)
    other = await api.run(await api.gate_test())
    gate.release(other["id"])
    await until(lambda: api.get(f"/executions/{other['id']}"), lambda d: d["status"] == "completed")

    running = (await api.get("/executions?status=running"))["items"]
    [artifact] = (await api.get(f"/executions/{running[0]['id']}"))["artifacts"]
    assert artifact["stored"] is False
    early = await api.client.get(artifact["url"], headers=api.admin)
    assert (early.status_code, early.json()["detail"]) == (
        404,
        f"artifact {artifact['id']} is still being stored; read it again in a moment",
    )
    release.set()
    detail = await uploading
    assert [(a["stored"], a["size_bytes"]) for a in detail["artifacts"]] == [(True, 300 * KIB)]


async def test_a_file_half_stored_is_never_served(api: Api, tmp_path: Path) -> None:
    """A worker that stops between writing the chunks and marking the row stored."""
    detail = await run_files(api, {})
    path = tmp_path / "half.png"
    path.write_bytes(content("half.png", artifact_store.CHUNK_BYTES + 1))
    record = ArtifactRecord("screenshot", "half.png", path, "image/png")
    db = api.state.db
    artifact_id = await artifact_store._insert_row(db, detail["id"], 1, record, 0, None)
    await artifact_store._write_chunks(db, artifact_id, path, CAP)

    url = f"/api/v1/executions/{detail['id']}/artifacts/{artifact_id}"
    response = await api.client.get(url, headers=api.admin)

    assert response.status_code == 404
    assert response.json() == {
        "detail": f"artifact {artifact_id} was not kept: storing it did not finish"
    }
    listed = (await api.get(f"/executions/{detail['id']}"))["artifacts"]
    assert [(a["id"], a["stored"]) for a in listed] == [(artifact_id, False)]
    async with api.dashboard() as browser:
        page = (await browser.client.get(f"/executions/{detail['id']}")).text
    assert "Being stored" in page
    assert f'/artifacts/{artifact_id}"' not in page


async def test_a_file_gone_before_it_was_stored_is_refused(api: Api, tmp_path: Path) -> None:
    detail = await run_files(api, {})
    record = ArtifactRecord("screenshot", "gone.png", tmp_path / "gone.png", "image/png")

    kept = await artifact_store.store_file(api.state.db, detail["id"], 1, record, CAP, CAP)

    assert kept.error == "the file was gone before it could be stored"
    url = f"/api/v1/executions/{detail['id']}/artifacts/{kept.artifact_id}"
    response = await api.client.get(url, headers=api.admin)
    assert response.status_code == 404
    assert "the file was gone" in response.json()["detail"]


@pytest.fixture
async def auto_api(database_url: str, tmp_path: Path, gate: GateRunner) -> AsyncIterator[Api]:
    """The app with ARTIFACT_STORE left at `auto`."""
    settings = make_settings(database_url, tmp_path)
    registry = with_gate(Registry(settings), gate)
    registry.register("files", FilesRunner)
    async for value in start_api(settings, registry, with_worker=True):
        yield value


async def test_auto_keeps_files_on_disk_with_sqlite_and_in_the_database_with_postgres(
    auto_api: Api,
) -> None:
    settings: Settings = auto_api.state.settings
    detail = await run_files(auto_api, {"shot.png": 300 * KIB})

    artifact = detail["artifacts"][0]
    on_disk = artifacts.execution_dir(settings, detail["id"]) / "shot.png"
    chunks = await chunk_counts(auto_api, [artifact["id"]])
    if settings.is_sqlite:
        assert (on_disk.exists(), chunks) == (True, [0])
    else:
        assert (on_disk.exists(), chunks) == (False, [2])
    response = await auto_api.client.get(artifact["url"], headers=auto_api.admin)
    assert response.content == content("shot.png", 300 * KIB)


@pytest.mark.parametrize(
    ("url", "store", "expected"),
    [
        ("sqlite:///t.db", "auto", "disk"),
        ("postgresql+psycopg://db/t", "auto", "database"),
        ("sqlite:///t.db", "database", "database"),
        ("postgresql+psycopg://db/t", "disk", "disk"),
    ],
)
def test_where_artifacts_go(url: str, store: str, expected: str) -> None:
    settings = Settings(_env_file=None, database_url=url, artifact_store=store)
    assert artifact_store.location_for(settings) == expected


@pytest.mark.parametrize(
    "bad", [{"artifact_store": "s3"}, {"artifact_max_run_bytes": 0}, {"artifact_store": ""}]
)
def test_bad_artifact_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **bad)
