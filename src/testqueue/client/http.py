"""The API as the client sees it: JSON in and out, errors as sentences, no stack traces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

API = "/api/v1"
TIMEOUT_S = 30.0
# The server pings a quiet stream every 15 s; four missed pings mean it is gone.
STREAM_READ_S = 60.0


class ClientError(Exception):
    """Something the person at the terminal must fix or know; exits with `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Api:
    """One server, one token, one connection pool."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=server, headers=headers, timeout=TIMEOUT_S)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (or text); `ClientError` with the server's own words otherwise."""
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.server}: {exc}") from exc
        if response.status_code >= 400:
            raise ClientError(f"{self.server} says: {_detail(response)}")
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def events(self, path: str) -> Iterator[tuple[str, str]]:
        """(event, data) from a Server-Sent Events stream, until the server ends it."""
        try:
            with self._http.stream(
                "GET", API + path, timeout=httpx.Timeout(TIMEOUT_S, read=STREAM_READ_S)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(f"{self.server} says: {_detail(response)}")
                event, data = "message", []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data.append(line.removeprefix("data:").strip())
                    elif line == "":
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
        except httpx.HTTPError as exc:
            raise ClientError(f"lost the connection to {self.server}: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase}"
    if isinstance(detail, list):
        return "; ".join(str(problem.get("msg", problem)) for problem in detail)
    return str(detail)
