"""Bad input on the dashboard: refused with a page that says what to fix, never a 500."""

from __future__ import annotations

from typing import Any

from testqueue.vocabulary import MAX_INT_ID


async def test_ids_past_a_columns_range_are_refused_not_sent_to_the_database(
    api_only: Any,
) -> None:
    """The dashboard takes its id bounds from the vocabulary, as the API does."""
    async with api_only.dashboard() as browser:
        for path in (
            f"/tests/{MAX_INT_ID + 1}",
            "/tests/3000000000",
            f"/executions/1/artifacts/{MAX_INT_ID + 1}",
            "/executions/99999999999999999999",
        ):
            response = await browser.client.get(path)
            assert response.status_code == 422, f"{path}: {response.status_code}"
        response = await browser.client.get(f"/tests/{MAX_INT_ID}")
        assert response.status_code == 404
        assert "does not exist" in response.text
