"""PostgreSQL goes away under load: every connection between the service and the
database is cut, again and again, while clients queue runs and read the queue.

No request gets a 500 (a write that lost its connection gets 503 with
Retry-After, a read is tried again), no run that was answered 201 is lost,
and no run ever goes on twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import make_url

from conftest import Api, make_settings, start_api
from gates import GateRunner, with_gate
from proxy import Proxy
from spans import max_overlap
from testqueue.runners import Registry
from waiting import until

SLOTS = 5
CLIENTS = 8
CUTS = 4


async def test_cut_connections_give_no_500_lose_nothing_and_run_nothing_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    target = make_url(postgres_url)
    proxy = await Proxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(proxied, tmp_path, max_concurrent_executions=SLOTS)
    gate = GateRunner()
    gate.open_all.set()  # runs end at once: many claims and finishes while the cuts come
    try:
        async for api in start_api(settings, with_gate(Registry(settings), gate), with_worker=True):
            await _load_with_cuts(api, proxy, gate)
    finally:
        await proxy.stop()


async def _load_with_cuts(api: Api, proxy: Proxy, gate: GateRunner) -> None:
    test_id = await api.gate_test("through the proxy")
    answers: Counter[int] = Counter()
    queued: list[int] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        while not stop.is_set():
            if n % 2:
                response = await api.client.post(
                    f"/api/v1/executions/tests/{test_id}/run", headers=api.admin
                )
                if response.status_code == 201:
                    queued.append(response.json()["id"])
            else:
                response = await api.client.get(
                    "/api/v1/executions/queue/status", headers=api.admin
                )
            answers[response.status_code] += 1
            if response.status_code == 503:
                assert response.headers["retry-after"].isdigit()
                assert "database" in response.json()["detail"]

    clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
    try:
        for _ in range(CUTS):
            # Cut once load is flowing again since the last cut, then let it recover.
            await _answered_more(answers, 40)
            assert proxy.cut() > 0
        await _answered_more(answers, 40)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.gather(*clients)

    assert set(answers) <= {200, 201, 503}, answers
    assert answers[201] > 0 and answers[200] > 0
    # Every run the service said it queued exists, and each runs to the end, once.
    detail = await until(
        lambda: api.get("/executions/queue/status"),
        lambda s: s["active_count"] == 0 and s["queued_count"] == 0,
        timeout=60,
    )
    assert detail["active_count"] == 0
    history = await api.get(f"/executions?test_case_id={test_id}&limit=500")
    statuses = {item["id"]: item["status"] for item in history["items"]}
    assert set(queued) <= set(statuses), "a run answered 201 is missing"
    assert all(statuses[i] == "completed" for i in queued)
    assert (
        max_overlap([(b, e) for _, b, e in gate.history])
        <= api.state.settings.max_concurrent_executions
    )
    for execution_id in queued:
        spans = sorted((b, e) for i, b, e in gate.history if i == execution_id)
        assert max_overlap(spans) <= 1, f"execution {execution_id} ran twice at once: {spans}"


async def _answered_more(answers: Counter[int], more: int) -> None:
    """Until `more` requests were answered since now."""
    seen = sum(answers.values())

    async def total() -> int:
        return sum(answers.values())

    await until(total, lambda now: now >= seen + more, timeout=30)
