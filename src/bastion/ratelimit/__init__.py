"""Rate limiting: GCRA per client, principal, API key or route; login brute-force
protection; a ban list; per-client concurrency limits.

Threat: clients that send more than a route should serve (scraping, credential
stuffing, password guessing, resource exhaustion), that evade per-client limits by
rotating forwarded headers or IPv6 addresses, and that keep probing after being
refused.
Defence: one atomic GCRA step per rate in the shared store, keyed by the client
network resolved through trusted proxies only (IPv6 grouped by /64), or by the
principal, the API key, the route or a callable; 429 with `Retry-After` and the IETF
`RateLimit` fields (on allowed responses too once a client nears a limit, by
default: `response_headers`); growing delays and per-client lockout on login routes
that an attacker cannot turn against the real user; a ban for clients that pile up refusals
in any layer; a cap on in-flight requests per client on expensive routes.
Not covered: volumetric floods (the network's job, before any Python runs), and
distributed attacks below every per-client threshold (`requires_challenge` on the
login verdict is the app's cue to ask for a second factor or a CAPTCHA).

The package reads in this order:

* `reasons`    reason codes, and the status and event kind of each refusal;
* `rates`      parsing `"100/minute; burst=20"` into `Rate`;
* `keys`       bucket keys: client networks, hashing of attacker-chosen parts;
* `headers`    `RateLimit`, `RateLimit-Policy`, `Retry-After`;
* `login`      `LoginGuard`: backoff, lockout, challenge;
* `jail`       `Jail` and `JailSink`: bans after repeated refusals;
* `settings`   `RateLimitSettings`;
* `middleware` the thin ASGI adapter, `RateLimitMiddleware`.

References: ITU-T I.371 (GCRA); RFC 6585 section 4 (429); RFC 9110 section 10.2.3
(Retry-After); draft-ietf-httpapi-ratelimit-headers; OWASP Authentication and
Denial of Service Cheat Sheets.
"""

from __future__ import annotations

from bastion.ratelimit.jail import BanPolicy, Jail, JailSink, lift_ban
from bastion.ratelimit.keys import ClientGrouping, client_key, client_network
from bastion.ratelimit.login import LoginGuard, LoginPolicy, LoginVerdict
from bastion.ratelimit.middleware import RateLimitMiddleware, RateLimitState
from bastion.ratelimit.rates import Rate, parse_rate
from bastion.ratelimit.settings import RateLimitSettings

__all__ = [
    "BanPolicy",
    "ClientGrouping",
    "Jail",
    "JailSink",
    "LoginGuard",
    "LoginPolicy",
    "LoginVerdict",
    "Rate",
    "RateLimitMiddleware",
    "RateLimitSettings",
    "RateLimitState",
    "client_key",
    "client_network",
    "lift_ban",
    "parse_rate",
]
