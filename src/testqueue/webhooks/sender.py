"""One attempt of one delivery: resolve, check, sign, POST, read a little of the answer.

Redirects are not followed (a 3xx is a failed attempt: the receiver must give
the URL it means), the answer's body is read up to `EXCERPT_BYTES`, and the
whole attempt, connection included, ends at `WEBHOOK_TIMEOUT`.

Each attempt has a connection of its own (`Connection: close`, nothing kept
alive): requests go to a checked address, and a pool keyed by address would
let one subscription's request reuse a TLS connection verified for another
subscription's host name that resolves to the same address.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from testqueue.config import Settings
from testqueue.queue.deliveries import ERROR_MAX_CHARS, Answer, Due
from testqueue.webhooks import payloads, safety, signing

EXCERPT_BYTES = 1024
USER_AGENT = "testqueue-webhooks"


def client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client of a delivery loop: no redirects, no proxy from the environment,
    no connection kept for the next request."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.webhook_timeout),
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def send(http: httpx.AsyncClient, settings: Settings, due: Due) -> Answer:
    """Try `due` once; the answer says how it went, never raises for the receiver's sake."""
    started = time.monotonic()

    def answer(status: int | None, error: str | None, excerpt: str | None = None) -> Answer:
        elapsed = (time.monotonic() - started) * 1000
        return Answer(status, round(elapsed, 1), error and error[:ERROR_MAX_CHARS], excerpt)

    try:
        async with asyncio.timeout(settings.webhook_timeout):
            request = await _request(http, settings, due)
            response = await http.send(request, stream=True)
            try:
                excerpt = await _excerpt(response)
            finally:
                await response.aclose()
    except safety.Refused as exc:
        return answer(None, str(exc))
    except (TimeoutError, httpx.TimeoutException):
        return answer(None, f"no answer within {settings.webhook_timeout:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return answer(None, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return answer(status, None, excerpt)
    if response.is_redirect:
        where = response.headers.get("location", "")
        return answer(status, f"redirects are not followed (to {where})", excerpt)
    return answer(status, f"the receiver answered {status}", excerpt)


async def _request(http: httpx.AsyncClient, settings: Settings, due: Due) -> httpx.Request:
    """The signed POST, sent to the address checked (the host name kept for Host and TLS)."""
    url = httpx.URL(due.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    target = await safety.resolve(url.host, port, settings.webhook_allow_private)
    content = payloads.body(due)
    headers = {
        "Content-Type": "application/json",
        "Host": url.netloc.decode("ascii"),
        signing.SIGNATURE_HEADER: signing.signature(due.secret, content, int(time.time())),
        signing.DELIVERY_HEADER: str(due.id),
        signing.EVENT_HEADER: str(due.facts["event"]),
    }
    return http.build_request(
        "POST",
        url.copy_with(host=target.address),
        content=content,
        headers=headers,
        extensions={"sni_hostname": target.host},
    )


async def _excerpt(response: httpx.Response) -> str:
    read = b""
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= EXCERPT_BYTES:
            break
    return read[:EXCERPT_BYTES].decode("utf-8", "replace")
