"""Tags: a run that needs a tag only a worker with it may take, and the line says why it waits."""

from __future__ import annotations

from sqlalchemy import select

from conftest import Api
from gates import GateRunner
from testqueue.config import Settings
from testqueue.dispatcher import Dispatcher
from testqueue.models import Worker
from testqueue.runners import Registry
from testqueue.vocabulary import encode_tags


async def _tagged(api: Api, tags: list[str]) -> int:
    test_id = await api.gate_test(f"needs {tags}", required_tags=tags)
    assert (await api.get(f"/tests/{test_id}"))["required_tags"] == sorted(tags)
    return test_id


async def test_only_a_worker_with_every_tag_claims_and_the_rest_wait_saying_why(
    api_only: Api,
    settings: Settings,
    registry: Registry,
    gate: GateRunner,
) -> None:
    gpu = await _tagged(api_only, ["gpu", "linux"])
    linux = await _tagged(api_only, ["linux"])
    plain = await _tagged(api_only, [])
    waits_for_gpu = (await api_only.run(gpu, priority=1))["id"]
    needs_linux = (await api_only.run(linux))["id"]
    anywhere = (await api_only.run(plain))["id"]

    linux_settings = settings.model_copy(update={"worker_tags": ["linux", "browser"]})
    linux_worker = Dispatcher(linux_settings, api_only.state.db, registry, worker_id="linux-box")
    await linux_worker.start()
    try:
        await gate.wait_started(2)
        assert sorted(gate.started) == sorted([needs_linux, anywhere])
        detail = await api_only.get(f"/executions/{waits_for_gpu}")
        assert detail["status"] == "pending"
        assert detail["queue_position"] == 1
        assert "needs a worker with tags gpu, linux" in detail["wait_reason"]
        status = await api_only.get("/executions/queue/status")
        assert "no live worker has them" in status["queue"][0]["wait_reason"]

        gpu_settings = settings.model_copy(update={"worker_tags": ["gpu", "linux"]})
        gpu_worker = Dispatcher(gpu_settings, api_only.state.db, registry, worker_id="gpu-box")
        await gpu_worker.start()
        try:
            await gate.wait_started(3)
            assert gate.started[2] == waits_for_gpu
            workers = {w["id"]: w for w in await api_only.get("/executions/queue/workers")}
            assert workers["gpu-box"]["running"] == [waits_for_gpu]
            assert workers["gpu-box"]["tags"] == ["gpu", "linux"]
            async with api_only.state.db.read() as conn:
                stored = await conn.execute(select(Worker.id, Worker.tags))
                # One encoding for the tags of executions and of workers.
                assert dict(stored.all())["gpu-box"] == encode_tags(["linux", "gpu"])
            assert workers["linux-box"]["live"] is True
        finally:
            gate.open_all.set()
            await gpu_worker.stop()
    finally:
        gate.open_all.set()
        await linux_worker.stop()
