"""GET /metrics: the figures of the workload exactly, histograms from the database, the
same on two hosts of one database, and only for the token or an allowed address."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import make_settings, start_api
from gates import GateRunner, with_gate
from tallies import WAITED_S, deliveries_and_ticks, mixed_workload, recount
from testqueue.runners import Registry

TOKEN = "a-metrics-token-of-some-length"


def _parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    """A family's samples named `family.name + suffix`, by their labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


async def _scrape(api: Any, client: AsyncClient | None = None, **headers: str) -> Any:
    response = await (client or api.client).get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response


async def test_the_families_show_exactly_what_the_runs_did(api_only: Any) -> None:
    done = await mixed_workload(api_only)
    families = _parse((await _scrape(api_only)).text)

    finished = _samples(families["testqueue_executions_finished"], "_total")
    assert finished == {
        (("result", result), ("runner", runner)): n for (result, runner), n in done.finished.items()
    }
    for name, n in (
        ("cancelled", done.cancelled),
        ("expired", done.expired),
        ("retried", done.retried),
        ("flaky", done.flaky),
    ):
        assert _samples(families[f"testqueue_executions_{name}"], "_total") == {(): n}, name
    pending = _samples(families["testqueue_pending"])
    assert pending[(("priority", "5"),)] == done.pending
    assert sum(pending.values()) == done.pending and len(pending) == 10
    assert _samples(families["testqueue_running"]) == {(): done.running}
    assert _samples(families["testqueue_slots"]) == {(): 5}
    assert _samples(families["testqueue_paused"]) == {(): 0}
    assert _samples(families["testqueue_live_workers"]) == {(): 0}
    assert "process_cpu_seconds" in families

    expected = await recount(api_only.state.db)
    for family, name in (("run_s", "testqueue_run_seconds"), ("wait_s", "testqueue_wait_seconds")):
        _assert_histogram(families[name], expected.histogram(family))
    # The runs made to last 0.3, 3 and 40 s sit in the buckets that hold those durations.
    run = _samples(families["testqueue_run_seconds"], "_bucket")
    assert run[(("le", "0.25"), ("result", "fail"))] == 0
    assert run[(("le", "0.5"), ("result", "fail"))] == 1
    assert run[(("le", "2.5"), ("result", "pass"))] == 1  # the flaky pass, at once
    assert run[(("le", "5.0"), ("result", "pass"))] == 2
    assert run[(("le", "30.0"), ("result", "timeout"))] == 0
    assert run[(("le", "60.0"), ("result", "timeout"))] == 1
    wait = _samples(families["testqueue_wait_seconds"], "_bucket")
    assert WAITED_S <= 1.0 and wait[(("le", "1.0"), ("result", "timeout"))] == 1


def _assert_histogram(
    family: Any, wanted: dict[str, tuple[list[tuple[float, int]], float]]
) -> None:
    buckets = _samples(family, "_bucket")
    counts = _samples(family, "_count")
    sums = _samples(family, "_sum")
    assert {dict(k)["result"] for k in counts} == set(wanted)
    for result, (cumulative, total_s) in wanted.items():
        shown = sorted(
            (float(dict(k)["le"]), v) for k, v in buckets.items() if dict(k)["result"] == result
        )
        assert shown == cumulative, result
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(shown)), result
        assert shown[-1][0] == math.inf and shown[-1][1] == counts[(("result", result),)]
        # SQLite's date functions keep milliseconds: each observation may be 1 ms off.
        slack = 0.002 * shown[-1][1]
        assert math.isclose(sums[(("result", result),)], total_s, abs_tol=slack), result


QUEUE_FAMILIES = {
    "testqueue_pending",
    "testqueue_running",
    "testqueue_slots",
    "testqueue_paused",
    "testqueue_live_workers",
    "testqueue_executions_finished",
    "testqueue_executions_cancelled",
    "testqueue_executions_expired",
    "testqueue_executions_retried",
    "testqueue_executions_flaky",
    "testqueue_wait_seconds",
    "testqueue_run_seconds",
    "testqueue_webhook_deliveries",
    "testqueue_schedule_ticks",
}


@contextlib.asynccontextmanager
async def _host(url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Any]:
    """One API host's app (its own `Database`), without a dispatcher."""
    settings = make_settings(url, tmp_path, **overrides)
    registry = with_gate(Registry(settings), GateRunner())
    async for api in start_api(settings, registry, with_worker=False):
        yield api


async def test_two_hosts_on_one_database_report_the_same(postgres_url: str, tmp_path: Path) -> None:
    async with _host(postgres_url, tmp_path) as one, _host(postgres_url, tmp_path) as two:
        assert one.state.db is not two.state.db
        await mixed_workload(one)
        first = _parse((await _scrape(one)).text)
        second = _parse((await _scrape(two)).text)
    assert set(first) >= QUEUE_FAMILIES
    for name in QUEUE_FAMILIES:
        assert first[name].samples == second[name].samples, name
    assert _samples(second["testqueue_executions_cancelled"], "_total") == {(): 4}


@contextlib.asynccontextmanager
async def _from(api: Any, address: str) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=api.app, client=(address, 40000))
    async with AsyncClient(transport=transport, base_url="http://testqueue") as client:
        yield client


async def test_loopback_may_scrape_by_default_and_others_are_refused(api_only: Any) -> None:
    await _scrape(api_only)  # the test client comes from 127.0.0.1
    async with _from(api_only, "::1") as client:
        await _scrape(api_only, client)
    async with _from(api_only, "10.1.2.3") as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 403
        assert "10.1.2.3 is not in METRICS_ALLOW" in refused.json()["detail"]
        # A bearer token is refused when the server has none to compare it with.
        sent = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert sent.status_code == 401 and "no METRICS_TOKEN" in sent.json()["detail"]
    # Read-only.
    assert (await api_only.client.post("/metrics")).status_code == 405
    assert (await api_only.client.get("/api/v1/metrics")).status_code == 404


async def test_the_token_or_an_allowed_network_lets_a_scrape_in(
    database_url: str, tmp_path: Path
) -> None:
    allow = "10.0.0.0/8, 2001:db8::/32"
    async with _host(database_url, tmp_path, metrics_token=TOKEN, metrics_allow=allow) as api:
        async with _from(api, "192.0.2.9") as outside:
            missing = await outside.get("/metrics")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert "METRICS_TOKEN" in missing.json()["detail"]
            wrong = await outside.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            await _scrape(api, outside, Authorization=f"Bearer {TOKEN}")
        for inside in ("10.9.8.7", "2001:db8::5", "::ffff:10.0.0.1"):
            async with _from(api, inside) as client:
                await _scrape(api, client)
        # Loopback is no longer in the list once METRICS_ALLOW is set.
        assert (await api.client.get("/metrics")).status_code == 401


async def test_webhook_deliveries_by_state_and_schedule_ticks_follow_their_rows(
    api_only: Any,
) -> None:
    await deliveries_and_ticks(api_only.state.db)
    families = _parse((await _scrape(api_only)).text)
    assert _samples(families["testqueue_webhook_deliveries"]) == {
        (("state", "pending"),): 1,
        (("state", "delivered"),): 1,
        (("state", "failed"),): 1,
    }
    assert _samples(families["testqueue_schedule_ticks"], "_total") == {
        (("outcome", "queued"),): 2,
        (("outcome", "failed"),): 1,
    }
