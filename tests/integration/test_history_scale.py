"""History that stays fast at a million runs: cursor pages, bounded counts, index-only plans."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import create_engine

from conftest import Api, claim, finish
from testqueue.database import sync_url
from testqueue.models import Execution
from testqueue.services import executions
from testqueue.vocabulary import HistoryStatus, Result

E = Execution
RESULTS = [Result.PASS, Result.FAIL, Result.PASS, Result.ERROR, Result.TIMEOUT, Result.PASS]


async def _history(api: Api) -> tuple[int, list[int]]:
    """Six finished runs of one test case (results as RESULTS) and two waiting: their ids."""
    case = await api.gate_test("history")
    ids = [(await api.run(case))["id"] for _ in range(8)]
    for claimed, result in zip(await claim(api, 6), RESULTS, strict=True):
        await finish(api, claimed, result)
    return case, ids


async def _walk(api: Api, query: str) -> list[int]:
    """Every id the history lists for `query`, page by page with `before_id`."""
    seen: list[int] = []
    cursor = ""
    while True:
        page = await api.get(f"/executions?limit=3&{query}{cursor}")
        seen += [e["id"] for e in page["items"]]
        if not page["has_more"]:
            assert page["next_before_id"] is None
            return seen
        assert page["next_before_id"] == page["items"][-1]["id"]
        cursor = f"&before_id={page['next_before_id']}"


async def test_cursor_pages_list_what_offset_pages_list(api_only: Api) -> None:
    case, ids = await _history(api_only)
    assert await _walk(api_only, "") == ids[::-1]
    failed = [i for i, r in zip(ids, RESULTS, strict=False) if r != Result.PASS]
    assert await _walk(api_only, "status=failed") == failed[::-1]
    assert await _walk(api_only, f"test_case_id={case}&result=pass") == [ids[5], ids[2], ids[0]]
    assert await _walk(api_only, "status=pending") == ids[7:5:-1]
    by_offset = await api_only.get("/executions?limit=3&offset=3")
    assert [e["id"] for e in by_offset["items"]] == ids[::-1][3:6]
    assert (by_offset["total"], by_offset["total_exact"], by_offset["has_more"]) == (8, True, True)


async def test_the_total_is_counted_up_to_a_window(
    api_only: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _history(api_only)
    whole = await api_only.get("/executions?limit=10")
    assert (whole["total"], whole["total_exact"], whole["has_more"]) == (8, True, False)
    monkeypatch.setattr(executions, "COUNT_WINDOW", 5)
    capped = await api_only.get("/executions?limit=2")
    assert (capped["total"], capped["total_exact"], capped["has_more"]) == (5, False, True)
    few = await api_only.get("/executions?limit=2&result=fail")
    assert (few["total"], few["total_exact"]) == (1, True)


async def test_history_filters_by_batch(api_only: Api) -> None:
    case = await api_only.gate_test("batched")
    await api_only.run(case)
    made = await api_only.client.post(
        "/api/v1/batches", json={"test_case_ids": [case, case]}, headers=api_only.admin
    )
    batch = made.json()
    page = await api_only.get(f"/executions?batch_id={batch['batch']['id']}")
    assert [e["id"] for e in page["items"]] == [e["id"] for e in batch["executions"]][::-1]
    wrong = await api_only.client.get("/api/v1/executions?before_id=0", headers=api_only.admin)
    assert wrong.status_code == 422 and "before_id" in wrong.text


async def test_the_dashboard_pages_history_by_cursor_both_ways(
    api_only: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testqueue.web import history_page

    monkeypatch.setattr(history_page, "PAGE_SIZE", 3)
    _, ids = await _history(api_only)

    def shown(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'href="/executions/(\d+)"', html)]

    def link(html: str, rel: str) -> str | None:
        found = re.search(rf'<a href="\?([^"]*)" rel="{rel}"', html)
        return found[1].replace("&amp;", "&") if found else None

    async with api_only.dashboard() as browser:
        pages: list[list[int]] = []
        query: str | None = ""
        while query is not None:
            html = (await browser.client.get(f"/history?{query}")).text
            pages.append(shown(html))
            query = link(html, "next")
        assert [i for p in pages for i in p] == ids[::-1]
        assert len(pages) == 3
        for expected in pages[-2::-1]:  # and back up by the "newer" links
            query = link(html, "prev")
            assert query is not None
            html = (await browser.client.get(f"/history?{query}")).text
            assert shown(html) == expected
        assert link(html, "prev") is None, "the newest page has nothing newer"
        assert '<span class="count">8</span>' in html
        monkeypatch.setattr(executions, "COUNT_WINDOW", 5)
        capped = (await browser.client.get("/history")).text
        assert 'title="counted up to 5">5+</span>' in capped


def _plan(database_url: str, statement: Any) -> str:
    """The database's plan for `statement` with its parameters as the app binds them."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            compiled = statement.compile(dialect=conn.dialect)
            sql = str(compiled)
            if conn.dialect.name == "sqlite":
                ordered = tuple(compiled.params[k] for k in compiled.positiontup or ())
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ordered)
                return "\n".join(str(row[-1]) for row in rows)
            # With every other way penalised, a Sort or a Seq Scan left in the plan means
            # no index gives these rows in this order.
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_sort = off")
            rows = conn.exec_driver_sql(f"EXPLAIN {sql}", compiled.params)
            return "\n".join(str(row[0]) for row in rows)
    finally:
        engine.dispose()


FILTERS: dict[str, tuple[Any, ...]] = {
    "none": (None, None, None, None, None),
    "status": (HistoryStatus.COMPLETED, None, None, None, None),
    "pending": (HistoryStatus.PENDING, None, None, None, None),
    "failed": (HistoryStatus.FAILED, None, None, None, None),
    "result": (None, Result.TIMEOUT, None, None, None),
    "test case": (None, None, 1, None, None),
    "user": (None, None, None, 1, None),
    "batch": (None, None, None, None, 1),
}


@pytest.mark.parametrize("name", FILTERS)
async def test_every_filter_reads_its_page_from_an_index_newest_first(
    api_only: Api, name: str
) -> None:
    await _history(api_only)
    where = executions.history_filters(*FILTERS[name])
    first = executions._selection().where(*where).order_by(E.id.desc()).limit(26)
    deeper = first.where(E.id < 5)
    for statement in (first, deeper):
        plan = _plan(api_only.state.settings.database_url, statement)
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
        if name != "none":  # unfiltered, the table itself is in id order
            assert not re.search(r"SCAN executions\b(?! USING)", plan), plan
        assert "Seq Scan on executions" not in plan, plan
