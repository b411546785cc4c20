"""Where the client finds its server and token, and where `login` keeps them.

In order: the `--server` and `--token` flags, then `TESTQUEUE_URL` and
`TESTQUEUE_TOKEN`, then the file `login` wrote (`$XDG_CONFIG_HOME/testqueue/
credentials.json`, mode 0600), which holds a token per server and which
server was signed in to last.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testqueue.client.http import ClientError


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str


def store_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "testqueue" / "credentials.json"


def _stored() -> dict[str, Any]:
    path = store_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(server: str, token: str) -> Path:
    """Keep a token for `server`, readable by this user alone."""
    data = _stored()
    data.setdefault("tokens", {})[server] = token
    data["default"] = server
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(temporary, path)
    return path


def normal(server: str) -> str:
    server = server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ClientError(f"the server must be an http:// or https:// address, not {server!r}")
    return server


def resolve(server: str | None, token: str | None) -> Credentials:
    """The server and token to use; `ClientError` says how to give them when missing."""
    stored = _stored()
    chosen = server or os.environ.get("TESTQUEUE_URL") or stored.get("default")
    if not chosen:
        raise ClientError(
            "no server: pass --server URL, set TESTQUEUE_URL, or run `testqueue login`"
        )
    chosen = normal(chosen)
    key = token or os.environ.get("TESTQUEUE_TOKEN") or stored.get("tokens", {}).get(chosen)
    if not key:
        raise ClientError(
            f"no token for {chosen}: pass --token, set TESTQUEUE_TOKEN to a personal access "
            "token, or run `testqueue login --server URL`"
        )
    return Credentials(chosen, key)
