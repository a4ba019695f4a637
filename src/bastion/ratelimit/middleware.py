"""`RateLimitMiddleware`: the thin ASGI adapter over the rate-limit cores.

Per request, in this order:

1. ban check: a banned client network is refused 403 (`banned`) before any work;
   when the route's first rate counts by client, the ban check and that rate's
   step are one store call (`Store.gcra_unless`: one round trip, one Lua script on
   Redis), else a `get` of its own;
2. the route's rates: one atomic GCRA step per rate (`Store.gcra`), stopping at the
   first refusal, which is answered 429 with `Retry-After`, `RateLimit-Policy` and
   `RateLimit`; an allowed response carries those two as `response_headers` says
   (by default only near a limit: `bastion.ratelimit.headers`), and when it carries
   none the request registers no header hook at all;
3. per-client concurrency on the routes that set it (`Store.incr` +1 before, -1 on
   every exit: return, exception, cancellation; a release that takes the counter
   below zero, should it have expired under a request that outlived its TTL, adds
   its own 1 back, so that interleaved releases end at zero);
4. login routes: the `LoginGuard` verdict before the app runs, which refuses a
   client past its failure budget (reserving a unit of it for this attempt) and
   claims the (account, client) pair for this attempt alone (`LoginGuard.begin`),
   and the app's status recorded after: one of `login_failure_statuses` (401 and
   403 by default) a failure, even when the app raises after sending it (a status
   the operator added, 400 or 422, counts toward the client's budget alone for a
   request whose body, of a media type the guard reads whole, and query string
   name no account, unless the attempt was let past that budget:
   `LoginGuard.record_client_failure`); 2xx/3xx a success, unless the app raised
   after it; anything else, no status, or a refusal by a Bastion layer inside
   releases the claim (only while it is still the attempt's own) and the unit. A
   safe method (GET, HEAD, OPTIONS, TRACE) makes an attempt only with credentials
   (`carries_credentials`: an `Authorization` header, or the account field in the
   query string: HTTP Basic guesses and Flask's `request.values` are GETs), and its
   2xx is never a success: a page load neither counts nor clears the client's
   failures.

An exit that awaits the store and is cancelled there raises the cancellation; the
exits outside it still run (`bastion.stages.run_stages`).

Several rates on one route are checked in order; a request refused by a later rate
has already spent a unit of the earlier ones (stricter, never looser, and no
two-phase protocol across stores).

A WebSocket handshake is an HTTP GET (RFC 6455 section 4.1), so the limit a user
writes for `GET /ws` holds for the sockets opened at `/ws`: looked up under
`WEBSOCKET` alone, it did not, and a client could open sockets there as fast as the
broader rules allowed. A `websocket` scope meets two rules, each the most specific of
its kind: the *handshake* rule, over the patterns naming `WEBSOCKET` or `GET` or no
method (a `WEBSOCKET` pattern wins a tie with a `GET` one), and the *socket* rule,
over those naming `WEBSOCKET` or no method (the rule it met before). When they differ
(the handshake rule is a `GET` pattern), the handshake is counted by the rates of
both (of the `GET` rule alone when there is no socket rule), the handshake rule's
first, each in its own buckets: the `GET` rule's are the
ones the HTTP GETs of that route spend (a handshake is one more GET), the socket
rule's the ones sockets spent before; so covering the handshake never makes a socket
cheaper to open. When the handshake rule is a `WEBSOCKET` or method-less pattern, it
is the socket rule too, and governs alone (write `WEBSOCKET /ws` to give sockets their
own limit). The handshake table is built at construction
(`RouteTable.for_websocket_handshake`, shared with the authorization layer), and the
rule of each pair met is remembered (`_handshake_rule`); an http request never looks
at either. A refused handshake is answered 429 with `Retry-After` and the two fields
where the server offers the denial-response extension, else closed with 1013
(`bastion.responses`).

Fail mode: a `StoreError` anywhere is an outage. With `fail_open` (the default) the
request is served unlimited, on purpose: a limiter outage must not become a site
outage; the limits layer's process-wide concurrency cap still bounds the load, and a
`sys_availability` event (`store-unavailable`, at most one per
`OUTAGE_REPORT_INTERVAL_SECONDS` per process, so an outage cannot flood the log)
tells the operator. With `fail_open=False` the request is refused 503, with an
event each time. No verdict or store state is kept across requests, so the first
call after the store is back is limited again: the store reconnects by itself.

Speed: over the in-process `MemoryStore` nothing waits, so `enter` decides the
usual request synchronously (`MemoryStore.steps_synchronously`): no coroutine, the
store's steps called directly; refusals, store failures, concurrency and login
steps, and every other store, are awaited as before, and a test holds the two
paths to the same verdicts and headers. What a request derives from constants is
remembered in bounded memos, cleared when full so that a spray of addresses only
churns them: a client address's key parts (`CLIENT_MEMO_ENTRIES`) and a rule's
`RateLimit` lines by their figures (`LINES_MEMO_ENTRIES`), built only for a response
that carries them. When the limits are one catch-all rate counted by client
(`_only`, the default), the client memo also holds the store's digests of the
client's ban and bucket keys, and the request is one store step on them
(`MemoryStore.gcra_unless_digest_now`); while that step answers with the very result
the last allowed request got (the store shares the result of a step on an empty
bucket), the state's results and the response's lines derived from it (or that it
has none) are reused (`_only_last`). Tests hold that path to the general ones
(tests/ratelimit/test_only_path.py, tests/ratelimit/test_fast_only_last.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from bastion.context import SCOPE_KEY, get_context
from bastion.events import EventEmitter, default_emitter
from bastion.exceptions import ConfigurationError, StoreError
from bastion.ratelimit.headers import (
    lines_below,
    policy_value,
    ratelimit_prefix,
    ratelimit_value_prefixed,
    retry_after_value,
    sf_string,
)
from bastion.ratelimit.jail import Jail
from bastion.ratelimit.keys import KeyFunction, client_key, hash_part, principal_identity
from bastion.ratelimit.login import (
    AUTHENTICATION_FAILURE_STATUSES,
    MAX_LOGIN_BODY_BYTES,
    SAFE_METHODS,
    LoginGuard,
    LoginVerdict,
    carries_credentials,
    read_login_account,
)
from bastion.ratelimit.rates import BUILTIN_KEYS, Rate
from bastion.ratelimit.reasons import (
    KIND_BY_REASON,
    LAYER,
    REASON_BANNED,
    REASON_CONCURRENCY_LIMITED,
    REASON_LOGIN_FAILED,
    REASON_RATE_LIMITED,
    REASON_STORE_UNAVAILABLE,
    STATUS_BY_REASON,
)
from bastion.ratelimit.settings import RateLimitSettings
from bastion.responses import Refuser, header_value
from bastion.routes import RouteTable
from bastion.stages import EXTEND, Flow, Hook, run_stages
from bastion.stores import MemoryStore, Store
from bastion.stores.gcra import GCRALimit, GCRAResult, parse_limit
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

# One outage event per second per process: enough to see when it began and ended.
OUTAGE_REPORT_INTERVAL_SECONDS: Final = 1.0
# What a client refused for a store outage (fail closed) should wait: Redis
# restarts and fail-overs take seconds.
OUTAGE_RETRY_AFTER: Final = (b"retry-after", b"5")
# Client addresses whose key parts (`client_key`, the ban key, the catch-all bucket
# key, and over a memory store the digests of the last two) the layer remembers:
# every request of a client asks for the same ones. Cleared when full, so a spray
# of addresses only churns it (4,096 addresses, three keys and two digests each:
# about 2 MB).
CLIENT_MEMO_ENTRIES: Final = 4096
# `RateLimit` lines remembered per rule (`_Rule.lines`): a client's figures repeat
# from one request to the next (a quota far from spent, a bucket that is full again).
# Cleared when full: however the figures vary, at most this many per rule.
LINES_MEMO_ENTRIES: Final = 256
# Body messages a login step reads before it gives up naming the account: a login
# form comes in one or a few; empty ones (an HTTP/2 client may send any number of
# empty DATA frames) would otherwise pile up in memory without the size growing.
MAX_LOGIN_MESSAGES: Final = 1024
# Longest host remembered: an IPv6 address with a zone id is shorter (anything longer
# is a name, keyed afresh each time, so no memo entry is larger than this).
_MEMO_MAX_HOST: Final = 64


@dataclass(frozen=True, slots=True)
class _LimitedRate:
    rate: Rate
    key_prefix: str
    emission_interval_seconds: float
    burst_tolerance_seconds: float
    limit: GCRALimit  # the two above, validated once (`parse_limit`), for the memory store
    by_client: bool  # counted by the client's network (`key=client`)
    lines_below: int  # an allowed response carries the lines below this `remaining`


_Line: TypeAlias = tuple[bytes, bytes]
# A client's key part, ban key, catch-all bucket key, and the memory store's digests
# of the ban key and the bucket key (`_client_keys`).
_ClientKeys: TypeAlias = tuple[str, str, str | None, bytes | None, bytes]
_Lines: TypeAlias = tuple[_Line, _Line]  # `RateLimit-Policy` and `RateLimit`
# The last allowed result on `_only`'s path, the state's results, the response's
# lines and their header hook, None when it carries none (`_only_last`).
_Derived: TypeAlias = tuple[GCRAResult | None, tuple[GCRAResult, ...], _Lines | None, Hook | None]
_ceil: Final = math.ceil


@dataclass(frozen=True, slots=True)
class _Rule:
    rates: tuple[_LimitedRate, ...]
    policy_header: _Line
    prefixes: tuple[bytes, ...]  # each rate's `RateLimit` item up to `r=` (`ratelimit_prefix`)
    plain_rates: tuple[Rate, ...]
    single: bool = field(init=False)  # one rate
    first_rates: tuple[Rate, ...] = field(init=False)  # `plain_rates[:1]`
    first_below: int = field(init=False)  # `rates[0].lines_below`
    lines: dict[tuple[int, int], _Lines] = field(default_factory=dict, compare=False)
    """The response's two lines when one rate was stepped, by its `remaining` and
    rounded-up `reset` (`_lines`): bounded by `LINES_MEMO_ENTRIES`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "single", len(self.rates) == 1)
        object.__setattr__(self, "first_rates", self.plain_rates[:1])
        object.__setattr__(self, "first_below", self.rates[0].lines_below)

    def carries_lines(self, results: Sequence[GCRAResult]) -> bool:
        """Whether an allowed response whose rates were stepped to `results` carries
        the lines: one of them has less than `lines_below` remaining."""
        return any(
            result.remaining < limited.lines_below
            for limited, result in zip(self.rates, results, strict=False)
        )

    def all_lines(self, results: Sequence[GCRAResult]) -> _Lines:
        """The response's two lines for the rates stepped to `results`."""
        return self.policy_header, (b"ratelimit", ratelimit_value_prefixed(self.prefixes, results))


@dataclass(slots=True)
class RateLimitState:
    """What the layer decided, in `scope["bastion"].rate_limit` for the app to read."""

    rates: tuple[Rate, ...] = ()
    results: tuple[GCRAResult, ...] = ()
    login: LoginVerdict | None = None
    store_unavailable: bool = False


@dataclass(slots=True)
class _OutageReport:
    """Process-wide throttle of outage events (not request state: shared on purpose)."""

    last: float = field(default=float("-inf"))
    unreported: int = 0
    """Failures since the last report (the event's `details.failures`)."""


def _lines(rule: _Rule, remaining: int, reset_after: float) -> _Lines:
    """The response's lines for one stepped rate (`ratelimit_value`), by its
    `remaining` and its `reset_after` rounded up, remembered in the rule's bounded
    memo (built only for a response that carries them: near a limit, or refused)."""
    reset = _ceil(reset_after - 1e-9)  # `ceil_seconds`, inlined
    lines = rule.lines.get((remaining, reset))
    if lines is not None:
        return lines
    value = rule.prefixes[0] + b"%d;t=%d" % (max(0, remaining), max(0, reset))
    lines = (rule.policy_header, (b"ratelimit", value))
    memo = rule.lines
    if len(memo) >= LINES_MEMO_ENTRIES:
        memo.clear()
    memo[(remaining, reset)] = lines
    return lines


def _both_rules(first: _Rule, second: _Rule) -> _Rule:
    """One rule stepping `first`'s rates, then `second`'s, each rate in its own buckets
    (the same `_LimitedRate`, so the same key prefix): a WebSocket handshake's `GET`
    rule and socket rule (module docstring)."""
    rates = first.plain_rates + second.plain_rates
    return _Rule(
        first.rates + second.rates,
        (b"ratelimit-policy", policy_value(rates)),
        first.prefixes + second.prefixes,
        rates,
    )


def _compile_rules(settings: RateLimitSettings) -> RouteTable[_Rule]:
    rules: dict[str, _Rule] = {}
    for pattern, rates in settings.limits.items():
        if not rates:
            continue
        compiled = []
        for index, rate in enumerate(rates):
            limit = rate.gcra
            rule_id = hash_part(f"{pattern}\n{index}\n{rate}")[:16]
            emission_interval_seconds = limit.emission_interval_us / 1_000_000
            burst_tolerance_seconds = limit.burst_tolerance_us / 1_000_000
            compiled.append(
                _LimitedRate(
                    rate,
                    f"rl:{rule_id}:",
                    emission_interval_seconds,
                    burst_tolerance_seconds,
                    parse_limit(emission_interval_seconds, burst_tolerance_seconds),
                    rate.key == "client",
                    lines_below(rate, settings.response_headers),
                )
            )
        rules[pattern] = _Rule(
            tuple(compiled),
            (b"ratelimit-policy", policy_value(rates)),
            tuple(ratelimit_prefix(sf_string(rate.policy_name)) for rate in rates),
            tuple(rates),
        )
    return RouteTable(rules)


class RateLimitMiddleware:
    """Rate limits, bans, per-client concurrency and login protection (see module doc).

    Works as a wrapper and with Starlette's `app.add_middleware(RateLimitMiddleware,
    settings=...)`. `key_functions` name extra bucket keys usable as `key=NAME` in a
    rate: `(scope) -> str | None`, None falling back to the client's network. One
    `store` is shared by every worker in production (Redis); the default is a
    private `MemoryStore`. `clock` (monotonic seconds) paces outage events only.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: RateLimitSettings | None = None,
        *,
        store: Store | None = None,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.monotonic,
        key_functions: Mapping[str, KeyFunction] | None = None,
        jail: Jail | None = None,
    ) -> None:
        """`jail`: a ban list shared with other layers (Shield passes its own); by
        default the layer builds one over its store when bans are enabled."""
        self.app = app
        self.settings = settings or RateLimitSettings()
        self.store = store if store is not None else MemoryStore()
        self.events = events or default_emitter()
        self._refuser = Refuser(LAYER, self.events, monitor_only=self.settings.monitor_only)
        self._clock = clock
        self._grouping = self.settings.grouping()
        self._key_functions = dict(key_functions or {})
        for rates in self.settings.limits.values():
            for rate in rates:
                if rate.key not in BUILTIN_KEYS and rate.key not in self._key_functions:
                    raise ConfigurationError(
                        f"ratelimit.limits: key={rate.key} is neither one of "
                        f"{', '.join(sorted(BUILTIN_KEYS))} nor in key_functions"
                    )
        self._rules = _compile_rules(self.settings)
        # A WebSocket handshake is a GET: the table where `GET` patterns count for it
        # too, and the rule of each (handshake rule, socket rule) pair that differ,
        # built at the first handshake that meets them: at most one per pair of
        # patterns (`_handshake_rule`).
        self._handshake_rules = self._rules.for_websocket_handshake()
        self._handshake_pairs: dict[tuple[int, int], _Rule] = {}
        self._concurrency: RouteTable[tuple[str, int]] = RouteTable(
            {
                pattern: (f"cc:{hash_part(pattern)[:16]}:", limit)
                for pattern, limit in self.settings.concurrency.items()
            }
        )
        self._login_routes: RouteTable[bool] = RouteTable(
            dict.fromkeys(self.settings.login_routes, True)
        )
        self._has_concurrency = bool(self._concurrency)
        self._has_login_routes = bool(self._login_routes)
        self.jail: Jail | None = jail or (
            Jail(
                self.store,
                self.settings.ban_policy(),
                grouping=self._grouping,
                events=self.events,
            )
            if self.settings.ban_enabled
            else None
        )
        self.login_guard = LoginGuard(
            self.store,
            self.settings.login_policy(),
            grouping=self._grouping,
            never_ban=self.settings.never_ban,
        )
        self._login_failure_statuses = frozenset(self.settings.login_failure_statuses)
        self._api_key_header = self.settings.api_key_header.encode("latin-1")
        self._outage = _OutageReport()
        # The ban check rides on the first rate's step when both live in one store.
        self._guard_in_store = self.jail is not None and self.jail.store is self.store
        # A memory store steps without a coroutine (`MemoryStore.steps_synchronously`),
        # and then `enter` decides the usual request by itself; bans must live in the
        # same store, so that the ban check is one of its steps too.
        self._steps: MemoryStore | None = (
            self.store
            if isinstance(self.store, MemoryStore)
            and self.store.steps_synchronously
            and (self.jail is None or self._guard_in_store)
            else None
        )
        # The rule of every request when the limits are one catch-all pattern (the
        # default, "*"): no lookup then.
        patterns = self._rules.patterns
        self._catch_all: _Rule | None = (
            patterns[0][1]
            if len(patterns) == 1 and patterns[0][0].kind == "any" and not patterns[0][0].methods
            else None
        )
        # The catch-all's first rate's key prefix, when it counts by client: every
        # request's bucket is that prefix and the client's part (`_client_keys`).
        first = self._catch_all.rates[0] if self._catch_all is not None else None
        self._catch_all_prefix = first.key_prefix if first is not None and first.by_client else ""
        # The rule of every request when it is that catch-all with one rate, over a
        # memory store stepped synchronously: `enter` then steps the digests of the
        # client's ban and bucket keys remembered with its key parts (`_client_keys`).
        # A store whose synchronous steps are overridden is stepped through them
        # (`MemoryStore.steps_by_digest`).
        only = (
            self._catch_all
            if self._steps is not None and self._steps.steps_by_digest and self._catch_all_prefix
            else None
        )
        self._only: tuple[_Rule, GCRALimit] | None = (
            (only, only.rates[0].limit) if only is not None and only.single else None
        )
        self._clients: dict[str | None, _ClientKeys] = {}
        """Client address to its key parts (`_client_keys`)."""
        self._only_last: _Derived = (None, (), None, None)
        """On `_only`'s path, the last allowed result and what `enter` derived from it
        (the state's results, the response's lines and their hook), reused while the
        store answers with that same (immutable) result: one entry, replaced whole."""
        # Neither concurrency limits nor login routes: nothing to await after the rates.
        self._plain = not (self._has_concurrency or self._has_login_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on, decided
        without awaiting anything; else an awaitable of True when it was refused.

        With a memory store (`_steps`), the usual request (not banned, within its
        rates) is decided here, with no coroutine. Anything else goes on in one: a
        refusal, a store failure, or the concurrency and login steps of the routes
        that have them, from where this left off (`_refused_rate`, `_failed`,
        `_rest`); a ban, seen before anything was written, from the start, on the
        awaited path (`_enter`), which every other store takes. Both decide the
        same (tests/ratelimit/test_sync_path.py).
        """
        steps = self._steps
        if steps is None:
            return self._enter(flow)
        scope = flow.scope
        context = scope.get(SCOPE_KEY) or get_context(scope)
        client = context.client  # `context.client_host`, inlined
        host = client[0] if client else None
        keys = self._clients.get(host)
        if keys is None:
            keys = self._client_keys(host)
        only = self._only
        if only is not None:
            # One catch-all rate counted by client: the ban check and its step, on the
            # digests remembered with the client's key parts (`_client_keys`).
            catch_all, limit = only
            try:
                first = steps.gcra_unless_digest_now(keys[3], keys[4], limit)
            except StoreError:
                state = context.rate_limit = RateLimitState(store_unavailable=True)
                return self._failed(flow, state)
            if first is None:
                return self._enter(flow)  # banned: answered there (nothing was written)
            derived = self._only_last
            if first is derived[0]:
                # The very result the last allowed request got (the store shares the
                # result of a step on an empty bucket): what was derived from it.
                state = context.rate_limit = RateLimitState(catch_all.first_rates, derived[1])
                if self._plain:  # `_rest`, inlined
                    reused = derived[3]
                    if reused is not None and scope["type"] == "http":
                        flow.hooks.append(reused)
                    return None
                return self._rest(flow, state, derived[2])
            firsts = (first,)
            state = context.rate_limit = RateLimitState(catch_all.first_rates, firsts)
            # As below, for one rate.
            allowed, _, remaining, _, reset_after = first
            if allowed and remaining >= catch_all.first_below:
                self._only_last = (first, firsts, None, None)  # far from the limit: no lines
                return None if self._plain else self._rest(flow, state, None)
            near = _lines(catch_all, remaining, reset_after)
            if not allowed:
                return self._refused_rate(flow, state, near, first)
            hook: Hook = (EXTEND, near)
            self._only_last = (first, firsts, near, hook)
            if self._plain:  # `_rest`, inlined
                if scope["type"] == "http":
                    flow.hooks.append(hook)
                return None
            return self._rest(flow, state, near)
        state = context.rate_limit = RateLimitState()
        rule = self._catch_all or (
            self._rules.lookup(scope["method"], scope["path"])
            if scope["type"] == "http"
            else self._handshake_rule(scope["path"])
        )
        client_part, ban_key, catch_all_bucket = keys[0], keys[1], keys[2]
        jailed = self.jail is not None
        try:
            if rule is None:
                if jailed and steps.get_now(ban_key) is not None:
                    return self._enter(flow)  # banned: answered there (nothing was written)
                return self._rest(flow, state, None)
            limited = rule.rates[0]
            if not limited.by_client:
                if jailed and steps.get_now(ban_key) is not None:
                    return self._enter(flow)  # banned, as above
                key = limited.key_prefix + self._bucket(scope, limited.rate.key, client_part)
                first = steps.gcra_now(key, limited.limit)
            else:
                # Counted by client: the bucket's key is remembered when the rule is
                # the catch-all (`_client_keys`), else put together here.
                key = catch_all_bucket or limited.key_prefix + client_part
                if jailed:  # the ban check rides on the first rate's step
                    guarded = steps.gcra_unless_now(ban_key, key, limited.limit)
                    if guarded is None:
                        return self._enter(flow)  # banned, as above
                    first = guarded
                else:
                    first = steps.gcra_now(key, limited.limit)
            # One unpacking: a named tuple's fields are not fast attributes.
            allowed, _, remaining, _, reset_after = first
            lines = None  # far from every limit: none
            if rule.single or not allowed:
                state.rates = rule.first_rates
                state.results = (first,)
                if not allowed or remaining < rule.first_below:
                    lines = _lines(rule, remaining, reset_after)
                    if not allowed:
                        return self._refused_rate(flow, state, lines, first)
            else:
                results = self._step_more(steps, scope, rule, client_part, first)
                state.rates = rule.plain_rates[: len(results)]
                state.results = results
                last = results[-1]
                if not last.allowed:
                    return self._refused_rate(flow, state, rule.all_lines(results), last)
                if rule.carries_lines(results):
                    lines = rule.all_lines(results)
        except StoreError:
            state.store_unavailable = True
            return self._failed(flow, state)
        if self._plain:  # `_rest`, inlined
            if lines is not None and scope["type"] == "http":
                flow.hooks.append((EXTEND, lines))
            return None
        return self._rest(flow, state, lines)

    def _handshake_rule(self, path: str) -> _Rule | None:
        """The rule of a WebSocket handshake at `path`: its handshake rule, and its
        socket rule when that is another one (module docstring)."""
        handshake = self._handshake_rules.lookup("WEBSOCKET", path)
        socket = self._rules.lookup("WEBSOCKET", path)
        # No handshake rule means no socket rule (its patterns are among the
        # handshake table's); a handshake rule naming WEBSOCKET or no method is the
        # socket rule itself (`RouteTable.for_websocket_handshake`).
        if handshake is None or socket is None or socket is handshake:
            return handshake
        pair = (id(handshake), id(socket))  # rules live as long as the layer
        both = self._handshake_pairs.get(pair)
        if both is None:
            both = self._handshake_pairs[pair] = _both_rules(handshake, socket)
        return both

    def _step_more(
        self,
        steps: MemoryStore,
        scope: Scope,
        rule: _Rule,
        client_part: str,
        first: GCRAResult,
    ) -> tuple[GCRAResult, ...]:
        """`enter`'s steps of the rates after the first (allowed), in order, up to the
        first refusal (as `_check_rates` steps them)."""
        results = [first]
        for limited in rule.rates[1:]:
            key = limited.key_prefix + self._bucket(scope, limited.rate.key, client_part)
            result = steps.gcra_now(key, limited.limit)
            results.append(result)
            if not result.allowed:
                break
        return tuple(results)

    async def _enter(self, flow: Flow) -> bool:
        """The request phase, every store step awaited: True when the request was
        refused (any store but the memory store; see `enter`)."""
        scope, send = flow.scope, flow.send
        context = scope.get(SCOPE_KEY) or get_context(scope)
        state = RateLimitState()
        context.rate_limit = state
        rule = (
            self._rules.lookup(scope["method"], scope["path"])
            if scope["type"] == "http"
            else self._handshake_rule(scope["path"])
        )
        extra_headers: Sequence[_Line] | None = None
        try:
            client = context.client  # `context.client_host`, inlined
            keys = self._client_keys(client[0] if client else None)
            client_part, ban_key = keys[0], keys[1]
            guard: str | None = None
            if self.jail is not None:
                guard = ban_key
                guarded = self._guard_in_store and rule is not None and rule.rates[0].by_client
                if not guarded:
                    banned = await self.jail.store.get(guard) is not None
                    guard = None
                    if banned and await self._refuse(scope, send, REASON_BANNED):
                        return True
            if rule is not None:
                results = await self._check_rates(scope, rule, client_part, guard)
                if results is None:  # the ban, seen in the same step as the first rate
                    if await self._refuse(scope, send, REASON_BANNED):
                        return True
                    results = await self._check_rates(scope, rule, client_part, None) or []
                state.rates = rule.plain_rates[: len(results)]
                state.results = tuple(results)
                last = results[-1]
                if not last.allowed:
                    extra_headers = rule.all_lines(results)
                    headers = [
                        (b"retry-after", retry_after_value(last.retry_after_seconds)),
                        *extra_headers,
                    ]
                    if await self._refuse(scope, send, REASON_RATE_LIMITED, headers):
                        return True
                elif rule.carries_lines(results):
                    extra_headers = rule.all_lines(results)
        except StoreError:
            state.store_unavailable = True
            if await self._store_failed(scope, send):
                return True
        pending = self._rest(flow, state, extra_headers)
        return pending is not None and await pending

    async def _refused_rate(
        self,
        flow: Flow,
        state: RateLimitState,
        extra_headers: Sequence[_Line],
        refused: GCRAResult,
    ) -> bool:
        """`enter`, once a rate refused the request: answer 429, as `_enter` does."""
        headers = [(b"retry-after", retry_after_value(refused.retry_after_seconds)), *extra_headers]
        try:
            if await self._refuse(flow.scope, flow.send, REASON_RATE_LIMITED, headers):
                return True
        except StoreError:
            state.store_unavailable = True
            if await self._store_failed(flow.scope, flow.send):
                return True
        pending = self._rest(flow, state, extra_headers)
        return pending is not None and await pending

    async def _failed(self, flow: Flow, state: RateLimitState) -> bool:
        """`enter`, once the store failed: the fail mode, as `_enter` applies it."""
        if await self._store_failed(flow.scope, flow.send):
            return True
        pending = self._rest(flow, state, None)
        return pending is not None and await pending

    def _rest(
        self, flow: Flow, state: RateLimitState, extra_headers: Sequence[_Line] | None
    ) -> Awaitable[bool] | None:
        """After the bans and rates: the response's headers, then the concurrency and
        login steps of the routes that have them (None when there is nothing to await)."""
        scope = flow.scope
        if scope["type"] != "http":
            return None
        if extra_headers:
            flow.hooks.append((EXTEND, extra_headers))
        if self._plain:
            return None
        method, path = scope["method"], scope["path"]
        if self._has_concurrency:
            concurrency = self._concurrency.lookup(method, path)
            if concurrency is not None:
                return self._counted_then_login(flow, state, concurrency)
        if self._has_login_routes and self._is_login(scope):
            return self._enter_login(flow, state)
        return None

    def _is_login(self, scope: Scope) -> bool:
        """Whether the request is a login attempt: on a login route, an unsafe method
        (in any case: some servers pass it as sent, and Django upper-cases it), or
        a safe one that carries credentials (`carries_credentials`)."""
        method = scope["method"]
        if not self._login_routes.lookup(method, scope["path"]):
            return False
        return method.upper() not in SAFE_METHODS or carries_credentials(
            scope["headers"], scope.get("query_string", b""), self.settings.login_account_field
        )

    async def _counted_then_login(
        self, flow: Flow, state: RateLimitState, concurrency: tuple[str, int]
    ) -> bool:
        if await self._enter_counted(flow, state, concurrency):
            return True
        if self._has_login_routes and self._is_login(flow.scope):
            return await self._enter_login(flow, state)
        return False

    def _client_keys(self, host: str | None) -> _ClientKeys:
        """The client's key part (`client_key`), ban key (`Jail.ban_key`) and, when
        the limits are one catch-all rule whose first rate counts by client, the key
        of that rate's bucket (else None); when that rule is `enter`'s `_only`, the
        store's digests of the ban key (None without bans) and of the bucket key
        (`MemoryStore.digest_now`), else None and b"" (unused).

        Remembered for addresses of a sane length (a spray of addresses churns the
        memo: `CLIENT_MEMO_ENTRIES`); a longer host, which no IP address is, is keyed
        afresh each time.
        """
        part = client_key(host, self._grouping)
        prefix = self._catch_all_prefix
        ban_key = Jail.ban_key(part)
        bucket = prefix + part if prefix else None
        steps = self._steps
        keys: _ClientKeys
        if self._only is not None and steps is not None and bucket is not None:
            guard = steps.digest_now(ban_key) if self.jail is not None else None
            keys = (part, ban_key, bucket, guard, steps.digest_now(bucket))
        else:
            keys = (part, ban_key, bucket, None, b"")
        if host is None or len(host) <= _MEMO_MAX_HOST:
            clients = self._clients
            if len(clients) >= CLIENT_MEMO_ENTRIES:
                clients.clear()
            clients[host] = keys
        return keys

    async def _check_rates(
        self, scope: Scope, rule: _Rule, client_part: str, guard: str | None
    ) -> list[GCRAResult] | None:
        """Step the rule's rates in order; None when `guard` (a ban key) is live.

        With a `guard`, the first rate (counted by client) is stepped with the ban
        check in one store call.
        """
        results: list[GCRAResult] = []
        for limited in rule.rates:
            key = limited.key_prefix + self._bucket(scope, limited.rate.key, client_part)
            if guard is not None:
                guarded = await self.store.gcra_unless(
                    guard,
                    key,
                    emission_interval_seconds=limited.emission_interval_seconds,
                    burst_tolerance_seconds=limited.burst_tolerance_seconds,
                )
                if guarded is None:
                    return None
                result = guarded
                guard = None
            else:
                result = await self.store.gcra(
                    key,
                    emission_interval_seconds=limited.emission_interval_seconds,
                    burst_tolerance_seconds=limited.burst_tolerance_seconds,
                )
            results.append(result)
            if not result.allowed:
                break
        return results

    def _bucket(self, scope: Scope, key: str, client_part: str) -> str:
        """The hashed key part of the bucket a rate with `key=` counts this request in."""
        if key == "client":
            return client_part
        context = get_context(scope)
        if key == "route":
            return "route"
        if key == "principal":
            identity = principal_identity(context.principal)
            if identity is not None:
                return "p:" + hash_part(identity)
        elif key == "api_key":
            untrusted_key = header_value(scope["headers"], self._api_key_header)
            if untrusted_key:
                return "k:" + hash_part(untrusted_key)
        elif key != "client":
            value = self._key_functions[key](scope)
            if value is not None:
                return "f:" + hash_part(value)
        return client_part

    async def _enter_counted(
        self, flow: Flow, state: RateLimitState, rule: tuple[str, int]
    ) -> bool:
        """Count the client's request in flight until the response is done; True when
        refused (too many in flight, or the store failed closed)."""
        scope = flow.scope
        prefix, limit = rule
        key = prefix + client_key(get_context(scope).client_host, self._grouping)
        ttl = self.settings.concurrency_ttl_seconds
        try:
            in_flight = await self.store.incr(key, 1, ttl_seconds=ttl)
        except StoreError:
            state.store_unavailable = True
            return await self._store_failed(scope, flow.send)

        async def release(error: BaseException | None) -> BaseException | None:
            # Released on every exit; if this fails (store down), the counter's TTL
            # frees the slot.
            try:
                if await self.store.incr(key, -1, ttl_seconds=ttl) < 0:
                    # The counter expired while this request held its slot, and the
                    # decrement took it below zero: a free slot for every such
                    # request, piling up. This release undoes its own decrement
                    # only: adding back all of the deficit it saw (`-left`) counts
                    # the other releases' decrements too when they interleave, and
                    # k of them left k(k-1)/2 requests in flight that were not.
                    await self.store.incr(key, 1, ttl_seconds=ttl)
            except StoreError:
                pass
            return error

        flow.exits.append(release)
        return in_flight > limit and await self._refuse(
            scope, flow.send, REASON_CONCURRENCY_LIMITED, [(b"retry-after", b"1")]
        )

    async def _enter_login(self, flow: Flow, state: RateLimitState) -> bool:
        """Ask the login guard before the app runs (True when refused); record the
        response's status as a failure or a success once the app is done."""
        scope = flow.scope
        flow.receive, untrusted_account, named, from_header = await _read_account(
            flow.receive, scope, self.settings.login_account_field
        )
        client = get_context(scope).client_host
        guard = self.login_guard
        try:
            # The pair's gate is claimed for this attempt (one at a time per pair);
            # a Basic user-id alone never gets past the client's budget.
            verdict = await guard.begin(untrusted_account, client, account_from_header=from_header)
        except StoreError:
            state.store_unavailable = True
            if await self._store_failed(scope, flow.send):
                return True
            verdict = None
        state.login = verdict
        if verdict is not None and not verdict.allowed:
            headers = [(b"retry-after", retry_after_value(verdict.retry_after_seconds))]
            if await self._refuse(scope, flow.send, verdict.reason, headers):
                return True
        statuses: list[int] = []
        outer_send = flow.send

        def watch_status(message: Message) -> Message:
            statuses.append(int(message["status"]))
            return message

        claimed = verdict is not None and verdict.allowed
        # A safe method's 2xx or 3xx is a page (a Basic-authenticated one, a form
        # that echoes `?username=`): a success there would clear the failures.
        succeeds = scope["method"].upper() not in SAFE_METHODS

        failure_statuses = self._login_failure_statuses

        async def record(error: BaseException | None) -> BaseException | None:
            status = statuses[0] if statuses else 0
            refused_inside = get_context(scope).refused_by is not None
            failed = status in failure_statuses
            try:
                if refused_inside or not (
                    failed or (succeeds and error is None and 200 <= status < 400)
                ):
                    # A Bastion layer inside (CSRF, policy, limits) refused before the
                    # app judged the credentials, or the app answered neither failure
                    # nor success (no status: it failed before answering): not a
                    # login attempt at all. Counting a refusal would let a
                    # cross-site page push backoff onto a victim's account. A success
                    # the app then failed (a 2xx or 3xx, and an error after it) is
                    # not taken as one either: the error may have undone the login
                    # (a session not saved), so the client's failures stay; only the
                    # pair's gate and the client's unit are freed.
                    if claimed:
                        await guard.abandon(untrusted_account, client, verdict)
                    return error
                if (
                    failed
                    and not named
                    and status not in AUTHENTICATION_FAILURE_STATUSES
                    and not (verdict is not None and verdict.past_budget)
                ):
                    # A status the operator added (400, 422) to a request that names
                    # no account: no password of an account was judged (an OAuth 2
                    # code or refresh grant, an authenticated admin's invalid form),
                    # and as a pair's failure it locked out every such request of
                    # the client. The budget still bounds a misread guess; an
                    # attempt let past the budget has none left, so its failure is
                    # its pair's (`LoginGuard.record_client_failure`).
                    await guard.record_client_failure(untrusted_account, client, verdict)
                    self._refuser.event(
                        scope,
                        kind=KIND_BY_REASON[REASON_LOGIN_FAILED],
                        reason=REASON_LOGIN_FAILED,
                        status=status,
                        action="allowed",
                        details={"counted": "client"},
                    )
                elif failed:
                    # A failure already answered counts whatever the app does next:
                    # an error after it (a background task failing on a field the
                    # attacker chose) would otherwise make every guess free.
                    after = await guard.record_failure(untrusted_account, client, verdict)
                    self._refuser.event(
                        scope,
                        kind=KIND_BY_REASON[REASON_LOGIN_FAILED],
                        reason=REASON_LOGIN_FAILED,
                        status=status,
                        action="blocked",
                        details={"next": after.reason, "retry_after": after.retry_after_seconds},
                    )
                else:
                    await guard.record_success(untrusted_account, client, verdict)
            except StoreError:
                await self._store_failed(scope, outer_send, answered=True)
            return error

        flow.hooks.append((watch_status, None))
        flow.exits.append(record)
        return False

    async def _refuse(
        self, scope: Scope, send: Send, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> bool:
        return await self._refuser(
            scope,
            send,
            status=STATUS_BY_REASON[reason],
            kind=KIND_BY_REASON[reason],
            reason=reason,
            headers=headers,
        )

    async def _store_failed(self, scope: Scope, send: Send, *, answered: bool = False) -> bool:
        """Apply the fail mode; True when the request was refused (fail closed)."""
        if self.settings.fail_open or answered:
            now = self._clock()
            self._outage.unreported += 1
            if now - self._outage.last >= OUTAGE_REPORT_INTERVAL_SECONDS:
                # The event stands for every failure since the last one, so the
                # metrics sink counts store errors exactly despite the throttle.
                failures, self._outage.unreported = self._outage.unreported, 0
                self._outage.last = now
                self._refuser.event(
                    scope,
                    kind=KIND_BY_REASON[REASON_STORE_UNAVAILABLE],
                    reason=REASON_STORE_UNAVAILABLE,
                    action="allowed",
                    details={"fail_open": self.settings.fail_open, "failures": failures},
                )
            return False
        return await self._refuse(scope, send, REASON_STORE_UNAVAILABLE, [OUTAGE_RETRY_AFTER])


async def _read_account(
    receive: Receive, scope: Scope, account_field: str
) -> tuple[Receive, str, bool, bool]:
    """Read a login body (at most `MAX_LOGIN_BODY_BYTES` in at most
    `MAX_LOGIN_MESSAGES` messages) and replay it unchanged; the account the request
    names, whether its body or query string may name one, and whether the account
    is a Basic user-id (`read_login_account`); "" and True when the body did not
    end within both."""
    messages: list[Message] = []
    size = 0
    complete = False
    while size <= MAX_LOGIN_BODY_BYTES and len(messages) < MAX_LOGIN_MESSAGES:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = True
            break
    headers: RawHeaders = scope["headers"]
    account, named, from_header = read_login_account(
        b"".join(m.get("body", b"") for m in messages)
        if complete and size <= MAX_LOGIN_BODY_BYTES
        else None,
        header_value(headers, b"content-type"),
        scope.get("query_string", b""),
        [value for name, value in headers if name.lower() == b"authorization"],
        account_field,
    )
    pending = list(reversed(messages))

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay, account, named, from_header
