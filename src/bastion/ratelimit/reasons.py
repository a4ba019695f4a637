"""Reason codes of the rate-limit layer, and the status each refusal is answered with.

One table, so a reviewer sees every refusal and its status in one place: too many
requests 429 with `Retry-After` (RFC 6585 section 4; RFC 9110 section 10.2.3), a
banned client 403 (the refusal is about who asks, not how fast), and a store that is
down while the layer fails closed 503 (RFC 9110 section 15.6.4).
"""

from __future__ import annotations

from typing import Final

from bastion.events import KIND_AUTHN_FAIL, KIND_EXCESS_RATE, KIND_SYS_AVAILABILITY

LAYER: Final = "ratelimit"

REASON_RATE_LIMITED: Final = "rate-limited"
REASON_CONCURRENCY_LIMITED: Final = "concurrency-limited"
REASON_BANNED: Final = "banned"
REASON_LOGIN_LOCKED: Final = "login-locked"
REASON_LOGIN_THROTTLED: Final = "login-throttled"
REASON_LOGIN_FAILED: Final = "login-failed"
REASON_STORE_UNAVAILABLE: Final = "store-unavailable"

STATUS_BY_REASON: Final[dict[str, int]] = {
    REASON_RATE_LIMITED: 429,
    REASON_CONCURRENCY_LIMITED: 429,
    REASON_BANNED: 403,
    REASON_LOGIN_LOCKED: 429,
    REASON_LOGIN_THROTTLED: 429,
    REASON_LOGIN_FAILED: 401,
    REASON_STORE_UNAVAILABLE: 503,
}

KIND_BY_REASON: Final[dict[str, str]] = {
    REASON_RATE_LIMITED: KIND_EXCESS_RATE,
    REASON_CONCURRENCY_LIMITED: KIND_EXCESS_RATE,
    REASON_BANNED: KIND_EXCESS_RATE,
    REASON_LOGIN_LOCKED: KIND_AUTHN_FAIL,
    REASON_LOGIN_THROTTLED: KIND_AUTHN_FAIL,
    REASON_LOGIN_FAILED: KIND_AUTHN_FAIL,
    REASON_STORE_UNAVAILABLE: KIND_SYS_AVAILABILITY,
}
