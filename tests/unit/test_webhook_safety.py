"""Where webhooks may go, and how they are signed: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from testqueue import errors
from testqueue.queue import deliveries
from testqueue.webhooks import safety, signing


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "fd00:ec2::254",
        "fc00::1",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert safety.why_refused(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert safety.why_refused(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("2002:7f00:1::1", "127.0.0.1"),  # 6to4
        ("2002:a9fe:a9fe::", "169.254.169.254"),
        ("2002:a00:1::1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo: the client, inverted
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
    ],
)
def test_ipv6_carrying_a_private_ipv4_address_is_refused(address: str, carried: str) -> None:
    reason = safety.why_refused(ipaddress.ip_address(address))
    assert reason is not None and f"carries {carried}" in reason


def test_6to4_of_a_public_ipv4_address_is_allowed() -> None:
    assert safety.why_refused(ipaddress.ip_address("2002:808:808::1")) is None


def test_a_url_naming_6to4_of_loopback_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match=r"carries 127\.0\.0\.1"):
        safety.check_url("http://[2002:7f00:1::1]/hook", allow_private=False)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("http:///x", "no host"),
        ("http://user:pw@example.com/x", "no user or password"),
        ("http://[::1]/x", "loopback"),
        ("http://example.com:port/x", "not a valid URL"),
    ],
)
def test_bad_urls_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(errors.InvalidInput, match=says):
        safety.check_url(url, allow_private=False)


def test_private_literals_pass_when_allowed() -> None:
    assert safety.check_url("http://127.0.0.1:8080/x", allow_private=True)


def test_the_signature_is_an_hmac_of_time_and_body() -> None:
    header = signing.signature("s3cret", b'{"a":1}', 1700000000)
    digest = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert signing.verify("s3cret", b'{"a":1}', header)
    assert not signing.verify("other", b'{"a":1}', header)
    assert not signing.verify("s3cret", b'{"a":2}', header)


def test_retry_delays_double_with_jitter_and_stop_at_an_hour() -> None:
    for attempt, full in ((1, 10.0), (2, 20.0), (5, 160.0), (30, deliveries.MAX_RETRY_DELAY_S)):
        delay = deliveries.retry_delay_s(attempt, 10.0)
        assert full / 2 <= delay <= full
