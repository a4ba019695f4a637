"""Settings of the rate-limit layer. Every default is justified where it is set.

Rates are parsed at validation (`bastion.ratelimit.rates`) and stored parsed; route
patterns are `bastion.routes` patterns, checked at validation too; `never_ban`
networks are parsed and bounded at validation (`bastion.ratelimit.jail.parse_never_ban`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import Field, PlainSerializer, PlainValidator, field_validator, model_validator

from bastion.ratelimit.headers import ResponseHeaders
from bastion.ratelimit.jail import (
    DEFAULT_BAN_SECONDS,
    DEFAULT_BAN_THRESHOLD,
    DEFAULT_BAN_WINDOW_SECONDS,
    BanPolicy,
    IPNetwork,
    parse_never_ban,
)
from bastion.ratelimit.keys import DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX, ClientGrouping
from bastion.ratelimit.login import (
    DEFAULT_BASE_DELAY_SECONDS,
    DEFAULT_CHALLENGE_AFTER,
    DEFAULT_CLIENT_LOCKOUT_AFTER,
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_FAILURE_WINDOW_SECONDS,
    DEFAULT_LOCKOUT_AFTER,
    DEFAULT_LOCKOUT_SECONDS,
    DEFAULT_MAX_DELAY_SECONDS,
    LoginPolicy,
)
from bastion.ratelimit.rates import Rate, parse_rate
from bastion.routes import parse_route_pattern
from bastion.sections import LayerSettings

# Ten requests a second per client network, sustained, on every route: far above a
# person with a browser (a page and its assets come from cache or a CDN), low enough
# that one client cannot take a worker's capacity. A DoS floor, on by default;
# tighten per route (`"POST /login": ["5/minute", "100/day"]`).
DEFAULT_LIMITS: Final[dict[str, tuple[str, ...]]] = {"*": ("600/minute",)}
# Safety net of a concurrency counter: a worker that crashes mid-request never
# releases its slot, so the counter expires this long after it was created. Longer
# than any request the limits layer lets run (its body timeout is 120 s).
DEFAULT_CONCURRENCY_TTL_SECONDS: Final = 300.0
DEFAULT_API_KEY_HEADER: Final = "x-api-key"
DEFAULT_LOGIN_ACCOUNT_FIELD: Final = "username"


def _to_rate(value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError("a rate is a string such as '100/minute'")
    return parse_rate(value)


RateSpec = Annotated[Rate, PlainValidator(_to_rate), PlainSerializer(str, return_type=str)]


def _check_patterns(value: dict[str, Any]) -> dict[str, Any]:
    for pattern in value:
        parse_route_pattern(pattern)
    return value


class RateLimitSettings(LayerSettings):
    """Rates per route and client, login protection, bans, per-client concurrency."""

    limits: dict[str, tuple[RateSpec, ...]] = Field(
        default_factory=lambda: {k: tuple(map(parse_rate, v)) for k, v in DEFAULT_LIMITS.items()}
    )
    """Route pattern -> rates (`"100/minute"`, `"10/30s; burst=5; key=api_key"`). The
    most specific pattern wins and all its rates apply. `{}` limits nothing. A
    WebSocket handshake is a GET (RFC 6455): it spends the rates of the `GET` pattern
    for its path, in the same buckets as that route's GETs, as well as those of its
    `WEBSOCKET` or method-less pattern; a `WEBSOCKET` pattern at least as specific as
    the `GET` one governs sockets alone."""

    ipv6_prefix_length: int = Field(default=DEFAULT_IPV6_PREFIX, ge=16, le=128)
    """IPv6 clients in one network share buckets (a subscriber gets a whole /64)."""

    ipv4_prefix_length: int = Field(default=DEFAULT_IPV4_PREFIX, ge=8, le=32)
    """IPv4 clients in one network share buckets."""

    response_headers: ResponseHeaders = "near_limit"
    """Which responses carry the IETF `RateLimit-Policy` and `RateLimit` fields. A
    refusal (429) always does, with `Retry-After`. `"near_limit"` (default): an allowed
    response too once less than half of one of its rates' burst remains (the burst is
    the quota unless the rate sets one), early enough
    for a client to slow down, while a client far from its limit is told nothing about
    capacity (the draft's security considerations) and the usual response is spared
    two header lines. `"always"`: every response of a limited route. `"refused"`:
    refusals only. Peers (slowapi, Flask-Limiter) send none by default."""

    api_key_header: str = DEFAULT_API_KEY_HEADER
    """Header whose (hashed) value is the bucket of rates with `key=api_key`."""

    fail_open: bool = True
    """When the store fails: serve the request unlimited and emit `store-unavailable`
    (default: an outage of the limiter must not become an outage of the site), or,
    if false, refuse it with 503."""

    concurrency: dict[str, int] = Field(default_factory=dict)
    """Route pattern -> most requests one client may have in flight (429 beyond)."""

    concurrency_ttl_seconds: float = Field(default=DEFAULT_CONCURRENCY_TTL_SECONDS, gt=0)
    """A concurrency counter expires this long after creation (crashed workers). A
    client's requests that outlive it are no longer counted (their releases never
    take the next counter below zero): set it above the longest response of a
    counted route, a download or a stream included."""

    login_routes: tuple[str, ...] = ()
    """Route patterns of login endpoints (`POST /login`, `/admin/*` behind HTTP
    Basic): an answer in `login_failure_statuses` (401, 403 by default) counts as a
    failure, a 2xx/3xx as a success, for the account in `login_account_field`. A
    GET, HEAD, OPTIONS or TRACE makes an attempt only when it carries credentials
    (an `Authorization` header, or the account field in the query string), and its
    2xx is never a success: the login page's 200 neither counts nor clears the
    client's failures."""

    login_account_field: str = DEFAULT_LOGIN_ACCOUNT_FIELD
    """Form or JSON field naming the account on login routes."""

    login_failure_statuses: tuple[int, ...] = DEFAULT_FAILURE_STATUSES
    """Statuses of a login route's answer that count as a failed attempt: 401 and 403
    by default. Add 400 for a login that answers wrong credentials with it (an OAuth
    2 password grant's `invalid_grant`, RFC 6749 section 5.2; DRF's
    `obtain_auth_token`; the FastAPI tutorial's `OAuth2PasswordRequestForm` login),
    422 for one that answers them 422. An added status is the pair's failure only
    when the request's body or query string names the account
    (`login_account_field`), or may name it to the application (a body the guard
    cannot read, or of another media type than url-encoded, JSON or multipart), or
    the attempt was let past the client's budget; for a request that names none
    (an OAuth 2 code, refresh or device grant; a form behind HTTP Basic) it counts
    toward the client's budget alone (`login_client_lockout_after`), never as a
    backoff or lockout that every such request of the client shares. List a relying
    party's backend, which exchanges its users' codes, in `never_ban` to exempt it
    from the budget too; keep 400 out of a token endpoint that serves the device
    grant (a device polls it every few seconds, `400 authorization_pending`, and
    would spend its budget within minutes). Client errors (4xx) only, 401 always
    among them; leaving 403 out is reported as a weakening. Any other answer but a
    2xx/3xx success neither counts nor clears."""

    login_lockout_after: int = Field(default=DEFAULT_LOCKOUT_AFTER, ge=1)
    login_lockout_seconds: float = Field(default=DEFAULT_LOCKOUT_SECONDS, gt=0)
    login_base_delay_seconds: float = Field(default=DEFAULT_BASE_DELAY_SECONDS, gt=0)
    login_max_delay_seconds: float = Field(default=DEFAULT_MAX_DELAY_SECONDS, gt=0)
    login_challenge_after: int = Field(default=DEFAULT_CHALLENGE_AFTER, ge=2)
    login_failure_window_seconds: float = Field(default=DEFAULT_FAILURE_WINDOW_SECONDS, gt=0)
    login_client_lockout_after: int = Field(default=DEFAULT_CLIENT_LOCKOUT_AFTER, ge=1)
    """Failures of one client network on any accounts (and its attempts in flight),
    within the failure window, after which its login attempts are refused (429)
    until the window ends: the bound on guesses wherever the guard and the
    application read the account differently. Clients behind one address share it,
    but an account that logged in from it within the window may still try (under
    its own backoff and lockout) when the body or query string names it (not the
    user-id of an `Authorization: Basic` header alone), and `never_ban` networks
    have no budget."""

    ban_enabled: bool = True
    """Ban clients that pile up refusals (needs the `JailSink` registered; `Shield`
    does it)."""

    ban_threshold: int = Field(default=DEFAULT_BAN_THRESHOLD, ge=1)
    ban_window_seconds: float = Field(default=DEFAULT_BAN_WINDOW_SECONDS, gt=0)
    ban_seconds: float = Field(default=DEFAULT_BAN_SECONDS, gt=0)

    never_ban: tuple[IPNetwork, ...] = ()
    """Addresses or CIDR networks that are never banned: your monitoring, health
    checkers, load generators, the host `bastion audit` runs from. Their refusals are
    not counted toward a ban, and their login failures not toward
    `login_client_lockout_after`; their rate limits, each account's login backoff
    and lockout, and every other layer still apply. A
    listed address exempts the network it is grouped in (`ipv6_prefix_length`).
    `0.0.0.0/0`, `::/0` and networks wider than /8 (IPv4) or /32 (IPv6) are refused."""

    _check_limits = field_validator("limits", "concurrency")(_check_patterns)

    @field_validator("api_key_header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        name = value.strip().lower()
        if not name or any(not (c.isalnum() or c in "-_") for c in name):
            raise ValueError("api_key_header must be a header name")
        return name

    @field_validator("login_routes")
    @classmethod
    def _check_login_routes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            parse_route_pattern(pattern)
        return value

    @field_validator("login_failure_statuses")
    @classmethod
    def _check_failure_statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        # A 2xx/3xx is a success and a 5xx the server's own failure (counting it
        # would lock users out during an outage); 401 is what every HTTP
        # authentication scheme answers a wrong credential with. 400 and 422 are
        # the operator's to add (`DEFAULT_FAILURE_STATUSES`).
        if any(not 400 <= status <= 499 for status in value):
            raise ValueError("login_failure_statuses must be client errors (400 to 499)")
        if 401 not in value:
            raise ValueError("login_failure_statuses must include 401")
        return tuple(sorted(set(value)))

    @field_validator("never_ban", mode="before")
    @classmethod
    def _parse_never_ban(cls, value: Any) -> Any:
        if isinstance(value, str):  # "10.0.0.5, 10.1.0.0/16", as an environment variable
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if not isinstance(value, Iterable):
            return value  # pydantic reports the type error
        return tuple(dict.fromkeys(parse_never_ban(item) for item in value))

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        if any(limit < 1 for limit in value.values()):
            raise ValueError("a concurrency limit must be at least 1")
        return value

    @model_validator(mode="after")
    def _check_policies(self) -> RateLimitSettings:
        self.login_policy()
        self.ban_policy()
        return self

    def weakenings(self) -> list[str]:
        found = [] if self.ban_enabled else ["ban_enabled=false"]
        if not self.limits:
            found.append("limits={}")
        left_out = sorted(set(DEFAULT_FAILURE_STATUSES) - set(self.login_failure_statuses))
        if left_out:
            found.append(
                "login_failure_statuses="
                + ",".join(map(str, self.login_failure_statuses))
                + " (without "
                + ",".join(map(str, left_out))
                + ")"
            )
        return found

    def grouping(self) -> ClientGrouping:
        return ClientGrouping(self.ipv4_prefix_length, self.ipv6_prefix_length)

    def login_policy(self) -> LoginPolicy:
        return LoginPolicy(
            lockout_after=self.login_lockout_after,
            lockout_seconds=self.login_lockout_seconds,
            base_delay_seconds=self.login_base_delay_seconds,
            max_delay_seconds=self.login_max_delay_seconds,
            challenge_after=self.login_challenge_after,
            failure_window_seconds=self.login_failure_window_seconds,
            client_lockout_after=self.login_client_lockout_after,
        )

    def ban_policy(self) -> BanPolicy:
        return BanPolicy(
            self.ban_threshold, self.ban_window_seconds, self.ban_seconds, self.never_ban
        )
