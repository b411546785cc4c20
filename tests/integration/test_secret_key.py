"""First start without SECRET_KEY: one key is made, kept, and read alike by every process."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conftest import make_settings, start_api
from gates import GateRunner, with_gate
from testqueue import security
from testqueue.database import sqlite_path
from testqueue.runners import Registry


async def test_first_start_without_a_key_makes_one_and_later_starts_keep_it(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, secret_key=None)
    keys = []
    for _ in range(2):
        registry = with_gate(Registry(settings), GateRunner())
        async for api in start_api(settings, registry, with_worker=False):
            keys.append(api.state.accounts.secret_key)
            assert (await api.get("/users/me"))["username"] == "admin"
    assert len(keys[0]) >= 32
    assert keys[0] == keys[1]
    path = sqlite_path(database_url)
    if path is not None:
        kept = path.parent / security.SECRET_FILE_NAME
        assert kept.read_text() == keys[0]
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_processes_starting_at_once_all_read_the_same_whole_key(tmp_path: Path) -> None:
    path = tmp_path / security.SECRET_FILE_NAME

    def first_start(_: Any) -> str:
        return security.secret_file(path)

    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = set(pool.map(first_start, range(64)))
    assert len(keys) == 1
    (key,) = keys
    assert len(key) >= 32 and path.read_text() == key
    assert [p.name for p in tmp_path.iterdir()] == [security.SECRET_FILE_NAME]
