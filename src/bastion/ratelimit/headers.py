"""The `RateLimit` and `RateLimit-Policy` response fields, and `Retry-After`.

Clients that see the quota can slow down before they are refused. Both fields are
Structured Field Lists (RFC 9651) of policies, each a String naming the policy:

    RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400
    RateLimit: "burst";r=42;t=17, "daily";r=999;t=86

`q` is the quota and `w` the window in seconds; `r` is what remains and `t` the
seconds until the quota is whole again (GCRA's `reset_after`), rounded up so a client
that waits `t` seconds is never refused for waiting too little. `Retry-After` is
delay-seconds (RFC 9110 section 10.2.3), rounded up and at least 1.

When they are sent (`ResponseHeaders`, the `ratelimit.response_headers` setting): a
refusal by a rate (429) always carries both fields with `Retry-After` (under
`monitor_only`, the response served in its place carries the two fields); an allowed
response carries them always, only near a limit (the default), or never. The draft's
security considerations warn that the fields disclose capacity to untrusted parties. A client
far from its limit has no use for them, one near it gets them in time to slow down,
and every refused client gets them; meanwhile the usual response is spared their
bytes and the server's work per header line (uvicorn's httptools protocol runs two
regular expressions on each). Peers send none by default (slowapi, Flask-Limiter).
"Near" is `lines_below`, the one place the rule is written.

Reference: draft-ietf-httpapi-ratelimit-headers (sections 3 and 4)
https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/ ;
RFC 9651 sections 3.1 and 3.3.3 (Lists, Strings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

from bastion.ratelimit.rates import MAX_COUNT, Rate
from bastion.stores.gcra import GCRAResult

ResponseHeaders: TypeAlias = Literal["always", "near_limit", "refused"]
"""Which responses of a limited route carry `RateLimit-Policy` and `RateLimit`."""


def lines_below(rate: Rate, when: ResponseHeaders) -> int:
    """An allowed response carries the fields when `remaining` of one of its rates is
    below this (built once per rate, so that the request's test is one comparison).

    `near_limit`: less than half of what a client may have at most remains,
    `2 * remaining < burst` (the burst is the quota `q` unless the rate sets one; a
    bound on the count instead would send the lines on every response of a rate whose
    burst is half its count or less, and only on the last units of a rate whose burst
    is far above it). `always`: every remaining is below it (at most `burst - 1`, and
    `burst <= MAX_COUNT`). `refused`: none is (an allowed step never leaves a negative
    remaining).
    """
    if when == "always":
        return MAX_COUNT
    if when == "near_limit":
        return (rate.burst + 1) // 2
    return 0


def sf_string(text: str) -> str:
    """`text` as an RFC 9651 String: printable ASCII, `"` and `\\` escaped."""
    if any(not 0x20 <= ord(char) <= 0x7E for char in text):
        raise ValueError("a structured-field string holds printable ASCII only")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_value(rates: Sequence[Rate]) -> bytes:
    """The `RateLimit-Policy` value for a route's rates (built once per route)."""
    return ", ".join(
        f"{sf_string(rate.policy_name)};q={rate.count};w={rate.period_seconds}" for rate in rates
    ).encode("ascii")


def ceil_seconds(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def ratelimit_value(rates: Sequence[Rate], results: Sequence[GCRAResult]) -> bytes:
    """The `RateLimit` value: what remains of each policy, and when it is whole."""
    return ", ".join(
        f"{sf_string(rate.policy_name)};r={max(0, result.remaining)};"
        f"t={ceil_seconds(result.reset_after_seconds)}"
        for rate, result in zip(rates, results, strict=True)
    ).encode("ascii")


def ratelimit_prefix(label: str) -> bytes:
    """What every `RateLimit` item of one policy starts with: its `sf_string` name and
    `;r=` (built once per route, for `ratelimit_value_prefixed`)."""
    return f"{label};r=".encode("ascii")


def ratelimit_value_prefixed(prefixes: Sequence[bytes], results: Sequence[GCRAResult]) -> bytes:
    """`ratelimit_value`, from each policy's `ratelimit_prefix` (the layer's hot path:
    one bytes formatting per policy, no generator for a single one)."""
    if len(results) == 1:
        result = results[0]
        remaining = result.remaining
        reset = math.ceil(result.reset_after_seconds - 1e-9)  # `ceil_seconds`, inlined
        return prefixes[0] + b"%d;t=%d" % (
            remaining if remaining > 0 else 0,
            reset if reset > 0 else 0,
        )
    return b", ".join(
        prefix + b"%d;t=%d" % (max(0, result.remaining), ceil_seconds(result.reset_after_seconds))
        for prefix, result in zip(prefixes, results, strict=False)
    )


def retry_after_value(seconds: float) -> bytes:
    return str(max(1, ceil_seconds(seconds))).encode("ascii")
