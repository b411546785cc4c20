"""Where a webhook may be sent: http(s) to public addresses only, unless allowed.

A URL that names a private address (loopback, link-local and the cloud
metadata address in it, private and unique-local ranges, multicast,
unspecified, reserved; and an IPv6 address that carries such an IPv4 one:
mapped, 6to4, Teredo) is refused when the subscription is made; a host
name is resolved when the request is sent, every address it resolves to is
checked, and the request goes to the address checked (so a name that
changes its answer between the check and the connection gains nothing).
`WEBHOOK_ALLOW_PRIVATE=true` lifts the address rule, for receivers inside
the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from testqueue import errors
from testqueue.schemas.common import MAX_URL_CHARS

SCHEMES = ("http", "https")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The request may not go there."""


def why_refused(address: Address) -> str | None:
    """Why a request may not go to `address`, or None when it is a public one.

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo's client)
    is judged by the IPv4 address too: a relay would deliver it there.
    """
    if isinstance(address, ipaddress.IPv6Address):
        teredo_client = address.teredo[1] if address.teredo else None
        for carried in (address.ipv4_mapped, address.sixtofour, teredo_client):
            if carried is not None:
                reason = why_refused(carried)
                if reason:
                    return f"{reason} ({address} carries {carried})"
        if address.ipv4_mapped is not None:
            return None
    for reason, hit in (
        ("a loopback address", address.is_loopback),
        ("a link-local address (cloud metadata lives there)", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("the unspecified address", address.is_unspecified),
        ("a reserved address", address.is_reserved),
        ("a private or unique-local address", address.is_private),
        ("not a public address", not address.is_global),
    ):
        if hit:
            return reason
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, allow_private: bool) -> str:
    """The URL if a subscription may use it, else `errors.InvalidInput` saying why."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise errors.InvalidInput(f"url: longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
        httpx.URL(url)  # what will send it must read it too
    except (ValueError, httpx.InvalidURL) as exc:
        raise errors.InvalidInput(f"url: not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise errors.InvalidInput("url: must start with http:// or https://")
    if any(char.isspace() or not char.isprintable() for char in url):
        raise errors.InvalidInput("url: may not hold spaces or control characters")
    if not host:
        raise errors.InvalidInput("url: names no host")
    if parts.username or parts.password:
        raise errors.InvalidInput("url: put no user or password in it; the secret signs requests")
    address = _literal(host)
    if address is not None and not allow_private:
        reason = why_refused(address)
        if reason:
            raise errors.InvalidInput(
                f"url: {host} is {reason}: webhooks go to public addresses only "
                "(WEBHOOK_ALLOW_PRIVATE=true allows others)"
            )
    return url


@dataclass(frozen=True)
class Target:
    """Where to connect: an address checked, and the host name the request is for."""

    address: str
    host: str


async def resolve(host: str, port: int, allow_private: bool) -> Target:
    """The address to send to; `Refused` when any address `host` resolves to is not allowed."""
    literal = _literal(host)
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise Refused(f"{host} could not be resolved: {exc}") from exc
        found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise Refused(f"{host} resolves to no address")
    if not allow_private:
        for address in found:
            reason = why_refused(address)
            if reason:
                raise Refused(f"{host} resolves to {address}, {reason}; not sent")
    return Target(str(found[0]), host)
