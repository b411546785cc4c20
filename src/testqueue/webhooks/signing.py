"""How a receiver knows a request came from us: an HMAC-SHA256 of the time and the body.

`X-Testqueue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
keyed with the subscription's secret. The time inside the signature lets a
receiver refuse old requests replayed; `X-Testqueue-Delivery` (the delivery's
id, the same on every retry) lets it drop repeats. docs/webhooks.md shows
the check.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Testqueue-Signature"
DELIVERY_HEADER = "X-Testqueue-Delivery"
EVENT_HEADER = "X-Testqueue-Event"


def signature(secret: str, body: bytes, at: int) -> str:
    """The signature header's value for `body` sent at unix time `at`."""
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether `header` signs `body` with `secret` (what a receiver does)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        at = int(fields["t"])
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(signature(secret, body, at), f"t={at},v1={fields.get('v1', '')}")
